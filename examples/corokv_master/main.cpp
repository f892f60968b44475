// corokv-master: the metadata service of a corokv cluster, over TCP.
//
//   corokv-master [--config FILE] [--listen HOST:PORT] [--admin HOST:PORT]
//                 [--max-lease-ttl-ms N] [--put-timeout-ms N]
//                 [--node-ttl-ms N] [--maintenance-ms N] [--ready-file PATH]
//                 [--etcd URL[,URL...] --cluster NAME [--name NAME]
//                  [--advertise HOST:PORT] [--lease-ttl-s N]
//                  [--sync-followers N] [--ack-timeout-ms N]]
//
// With --etcd the master is one of several replicated masters of cluster
// NAME (docs/guide/high-availability.md): they elect a leader through etcd, the
// others follow it, and clients find it with --master etcd://HOST:PORT/NAME.
// --advertise is the address clients reach this master at (default: the
// listen address; it must not be 0.0.0.0). --lease-ttl-s is the leader's
// etcd lease (default 2), --sync-followers how many followers must hold a
// change before any reply that reflects it goes out (default 1; 0: the
// leader acknowledges alone, and a failover may lose what it acknowledged),
// --ack-timeout-ms how long a reply waits for them before it is dropped and
// the followers behind are cut off (default 1000). --name must be unique in
// the cluster and kept across restarts (default: master-PID).
//
// Flags override the JSON config file, whose keys are the flag names without
// dashes ({"listen": "0.0.0.0:7400", "node-ttl-ms": 10000, ...}). Port 0
// picks a free port; --ready-file receives {"port": P, "admin_port": A} once
// both are listening, so a script (or a test) can find them. The admin port
// serves /health, /metrics (Prometheus) and /segments (JSON); --admin off
// disables it. SIGINT or SIGTERM stops it gracefully.
//
// A lease lasts as long as the querying client asks (its store_options::
// lease_ttl: the client computes its own deadline from it), up to
// --max-lease-ttl-ms; a query asking for more fails with invalid_argument.

#include <corokv/ha/replicated_master.hpp>
#include <corokv/net/admin_http.hpp>
#include <corokv/net/master_server.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <string>

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace corokv;

namespace {

struct settings {
  std::string listen = "127.0.0.1:7400";
  std::string admin = "127.0.0.1:7401";
  std::string ready_file;
  std::int64_t max_lease_ttl_ms = 30000;
  std::int64_t put_timeout_ms = 30000;
  std::int64_t node_ttl_ms = 10000;
  std::int64_t maintenance_ms = 100;
  std::string etcd;
  std::string cluster;
  std::string name;
  std::string advertise;
  std::int64_t lease_ttl_s = 2;
  std::int64_t sync_followers = 1;
  std::int64_t ack_timeout_ms = 1000;
  std::int64_t demote_watermark_pct = 75;
};

[[noreturn]] void usage(const std::string& why) {
  fmt::print(stderr, "corokv-master: {}\n", why);
  fmt::print(stderr,
             "usage: corokv-master [--config FILE] [--listen HOST:PORT] [--admin HOST:PORT|off]\n"
             "                     [--max-lease-ttl-ms N] [--put-timeout-ms N]\n"
             "                     [--node-ttl-ms N] [--maintenance-ms N] [--ready-file PATH]\n"
             "                     [--etcd URL[,URL...] --cluster NAME [--name NAME] [--advertise HOST:PORT]\n"
             "                      [--lease-ttl-s N] [--sync-followers N] [--ack-timeout-ms N]]\n"
             "                     [--demote-watermark-pct N]\n");
  std::exit(2);
}

tcp::endpoint parse_endpoint(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) usage("expected HOST:PORT, got '" + text + "'");
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(text.substr(0, colon), ec);
  if (ec) usage("not an IP address: '" + text.substr(0, colon) + "'");
  try {
    const int port = std::stoi(text.substr(colon + 1));
    if (port < 0 || port > 65535) throw std::out_of_range("port");
    return {address, static_cast<std::uint16_t>(port)};
  } catch (const std::exception&) {
    usage("not a port: '" + text.substr(colon + 1) + "'");
  }
}

// Applies one setting by name; the config file and the flags share names.
void apply(settings& s, const std::string& name, const nlohmann::json& value) {
  auto number = [&](std::int64_t& out) {
    if (!value.is_number_integer() || value.get<std::int64_t>() <= 0) usage(name + " must be a positive integer");
    out = value.get<std::int64_t>();
  };
  auto text = [&](std::string& out) {
    if (!value.is_string()) usage(name + " must be a string");
    out = value.get<std::string>();
  };
  if (name == "listen") text(s.listen);
  else if (name == "admin") text(s.admin);
  else if (name == "ready-file") text(s.ready_file);
  else if (name == "max-lease-ttl-ms") number(s.max_lease_ttl_ms);
  else if (name == "put-timeout-ms") number(s.put_timeout_ms);
  else if (name == "node-ttl-ms") number(s.node_ttl_ms);
  else if (name == "maintenance-ms") number(s.maintenance_ms);
  else if (name == "etcd") text(s.etcd);
  else if (name == "cluster") text(s.cluster);
  else if (name == "name") text(s.name);
  else if (name == "advertise") text(s.advertise);
  else if (name == "lease-ttl-s") number(s.lease_ttl_s);
  else if (name == "sync-followers") {
    if (!value.is_number_integer() || value.get<std::int64_t>() < 0) usage(name + " must be 0 or more");
    s.sync_followers = value.get<std::int64_t>();
  }
  else if (name == "ack-timeout-ms") number(s.ack_timeout_ms);
  else if (name == "demote-watermark-pct") {
    number(s.demote_watermark_pct);
    if (s.demote_watermark_pct > 100) usage(name + " is a percentage: 1 to 100");
  }
  else usage("unknown setting '" + name + "'");
}

settings parse(int argc, char** argv) {
  settings s;
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0 || i + 1 >= argc) usage("bad argument '" + arg + "'");
    flags[arg.substr(2)] = argv[++i];
  }
  if (auto it = flags.find("config"); it != flags.end()) {
    std::ifstream in(it->second);
    if (!in) usage("cannot read " + it->second);
    const auto config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!config.is_object()) usage(it->second + " is not a JSON object");
    for (auto& [name, value] : config.items()) apply(s, name, value);
    flags.erase(it);
  }
  for (auto& [name, value] : flags) {
    auto ends_with = [&](std::string_view tail) {
      return name.size() > tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
    };
    const bool numeric = ends_with("-ms") || ends_with("-s") || ends_with("-pct") || name == "sync-followers";
    if (numeric) {
      try {
        apply(s, name, nlohmann::json(std::stoll(value)));
      } catch (const std::logic_error&) {
        usage(name + " must be a positive integer");
      }
    } else {
      apply(s, name, nlohmann::json(value));
    }
  }
  if (s.etcd.empty() != s.cluster.empty()) usage("--etcd and --cluster go together");
  if (!s.etcd.empty() && !ha::parse_etcd_endpoints(s.etcd)) usage("--etcd: expected HOST:PORT[,HOST:PORT...]");
  if (!s.cluster.empty() && !ha::valid_cluster_name(s.cluster))
    usage("--cluster: letters, digits, '-', '_' and '.' only");
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const settings s = parse(argc, argv);
  meta::service_options service_options;
  service_options.max_lease_ttl = std::chrono::milliseconds(s.max_lease_ttl_ms);
  service_options.put_timeout = std::chrono::milliseconds(s.put_timeout_ms);
  service_options.node_ttl = std::chrono::milliseconds(s.node_ttl_ms);
  service_options.demote_watermark = static_cast<double>(s.demote_watermark_pct) / 100.0;
  net::master_options options;
  options.maintenance_interval = std::chrono::milliseconds(s.maintenance_ms);

  asio::io_context io(1);
  try {
    auto service = std::make_shared<meta::service>(service_options);
    net::master_server master(io.get_executor(), service, parse_endpoint(s.listen), options);
    std::optional<net::admin_server> admin;
    if (s.admin != "off") admin.emplace(io.get_executor(), master, parse_endpoint(s.admin));
    master.start();
    if (admin) admin->start();

    std::shared_ptr<ha::replicated_master> replicated;
    if (!s.etcd.empty()) {
      ha::replicated_master_options r;
      r.cluster = {*ha::parse_etcd_endpoints(s.etcd), s.cluster};
      r.name = s.name.empty() ? fmt::format("master-{}", ::getpid()) : s.name;
      const auto here = master.local_endpoint();
      r.advertise = s.advertise.empty() ? fmt::format("{}:{}", here.address().to_string(), here.port()) : s.advertise;
      if (!ha::parse_etcd_endpoint(r.advertise) || r.advertise.rfind("0.0.0.0:", 0) == 0)
        usage("--advertise: a HOST:PORT that clients can reach (listening on 0.0.0.0 needs one)");
      r.lease_ttl = std::chrono::seconds(s.lease_ttl_s);
      r.replication.log.sync_followers = static_cast<std::size_t>(s.sync_followers);
      r.replication.ack_timeout = std::chrono::milliseconds(s.ack_timeout_ms);
      r.service = service_options;
      r.log = [name = r.name](const std::string& line) { fmt::print(stderr, "corokv-master {}: {}\n", name, line); };
      replicated = std::make_shared<ha::replicated_master>(io.get_executor(), master, std::move(r));
      replicated->start();
      if (admin)
        admin->set_extra_metrics([&replicated] {
          const auto st = replicated->stats();
          using m = net::admin_server::extra_metric;
          return std::vector<m>{
              {"leader", "gauge", "1 while this master leads, else 0.", st.state == ha::master_state::leader},
              {"term", "gauge", "The newest leadership term this master knows.", st.term},
              {"terms_led_total", "counter", "Times this master became leader (its failovers won).", st.terms_led},
              {"step_downs_total", "counter", "Times this master stopped leading.", st.step_downs},
              {"followers", "gauge", "Followers connected (while leading).", st.replication.followers},
              {"followers_in_sync", "gauge", "Followers counted for acknowledgements.", st.replication.in_sync},
              {"replication_lag_records", "gauge", "Records between the journal and the slowest follower.",
               st.replication.max_lag},
              {"followers_cut_off_total", "counter", "Followers dropped for being too slow.",
               st.replication.followers_cut_off},
              {"follower_applied_records", "gauge", "Journal position applied (while following).",
               st.following.applied},
              {"snapshots_loaded_total", "counter", "Snapshots loaded from a leader.", st.following.snapshots},
              {"promoted_objects", "gauge", "Objects its copy held when it last took over the lead.",
               st.promoted_objects},
              {"copy_whole", "gauge", "1 while it holds a whole copy of the state (or leads), else 0.",
               st.copy.whole || st.state == ha::master_state::leader},
              {"copy_term", "gauge", "The term whose journal its copy follows.", st.copy.term},
              {"elections_deferred_total", "counter", "Times it saw no leader and let a master holding more go first.",
               st.elections_deferred},
              {"replies_not_replicated_total", "counter",
               "Replies dropped: not held by --sync-followers followers within --ack-timeout-ms (while leading).",
               st.replication.not_replicated},
              {"etcd_errors_total", "counter", "etcd calls that failed.", st.etcd_errors},
              {"retry_backoffs_total", "counter", "Waits before retrying etcd or the leader after a failure.",
               st.backoffs},
              {"retry_backoff_ms_total", "counter", "The time spent in those waits, in milliseconds.",
               static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(st.backoff_total).count())},
              {"retry_backoff_ceiling_ms", "gauge", "The longest the next such wait may be, in milliseconds.",
               static_cast<std::uint64_t>(
                   std::chrono::duration_cast<std::chrono::milliseconds>(st.backoff_ceiling).count())},
          };
        });
    }

    const auto port = master.local_endpoint().port();
    const auto admin_port = admin ? admin->local_endpoint().port() : 0;
    fmt::print(stderr, "corokv-master: metadata on {}:{}, admin {}\n", master.local_endpoint().address().to_string(),
               port, admin ? fmt::format("on port {}", admin_port) : std::string("off"));
    if (!s.ready_file.empty()) {
      // Written whole under a temporary name, then renamed: a reader never
      // sees half a file.
      const std::string tmp = s.ready_file + ".tmp";
      std::ofstream(tmp) << nlohmann::json{{"port", port}, {"admin_port", admin_port}}.dump() << "\n";
      std::rename(tmp.c_str(), s.ready_file.c_str());
    }

    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](boost::system::error_code ec, int signal) {
      if (ec) return;
      fmt::print(stderr, "corokv-master: signal {}, stopping\n", signal);
      if (admin) admin->stop();
      if (replicated) replicated->stop();
      master.stop();
    });
    io.run();
  } catch (const std::exception& e) {
    fmt::print(stderr, "corokv-master: {}\n", e.what());
    return 1;
  }
  return 0;
}
