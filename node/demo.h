// `brokerd --demo`: funded demo customers and a ready-to-paste curl line.
#pragma once

#include <string>

#include <boost/asio/ip/tcp.hpp>

#include "exchange/gateway.h"
#include "node/engine_runner.h"

namespace broker::node {

// Opens demo-1 ... demo-5 with $100,000 each and a few shares (idempotent across restarts).
// Blocks until the accounts are durable.
void open_demo_customers(engine_runner& runner, exchange::gateway* gateway);

// Prints a token for demo-1 (valid 24 h) and curl lines that use it.
void print_demo_banner(const std::string& jwt_secret, const boost::asio::ip::tcp::endpoint& at);

}  // namespace broker::node
