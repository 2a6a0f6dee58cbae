# HMAC signatures of exchange callbacks (signature.h). Included from exchange/CMakeLists.txt; kept
# apart so that the API server can verify callbacks without linking the exchange gateway.
add_library(broker_signature STATIC ${CMAKE_CURRENT_LIST_DIR}/signature.cc)
target_link_libraries(broker_signature PUBLIC broker_engine OpenSSL::Crypto
  PRIVATE broker_warnings)
