# HS256 JWTs for client authentication (jwt.h). Included from api/CMakeLists.txt; kept apart so
# that tools/ (brokerctl) can link token signing without the HTTP server.
add_library(broker_jwt STATIC ${CMAKE_CURRENT_LIST_DIR}/jwt.cc)
target_link_libraries(broker_jwt PUBLIC broker_engine OpenSSL::Crypto simdjson::simdjson
  PRIVATE broker_warnings)
