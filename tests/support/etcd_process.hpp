#pragma once
// A real, single-member etcd for tests: started on free 127.0.0.1 ports with
// a fresh data directory, killed (SIGKILL) and the directory removed when the
// object goes. stop() and start() keep the ports and the data, so that a test
// can make etcd "restart". The child gets PR_SET_PDEATHSIG, so an etcd never
// outlives a test process that crashed or was killed.
//
// The executable is $COROKV_ETCD, else /usr/bin/etcd.

#include <corokv/etcd/client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_future.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace corokv::test {

class etcd_process {
 public:
  static std::string executable() {
    const char* env = std::getenv("COROKV_ETCD");
    return env && *env ? env : "/usr/bin/etcd";
  }
  static bool available() { return ::access(executable().c_str(), X_OK) == 0; }

  // Starts etcd and waits until it serves a range, at most `ready_within`;
  // throws std::runtime_error (with etcd's log) if it does not.
  // `also_listen_on`: another local address to serve clients on (the
  // bridge of a test's network namespaces), besides 127.0.0.1.
  explicit etcd_process(std::chrono::milliseconds ready_within = std::chrono::seconds(20),
                        std::string also_listen_on = {})
      : dir_(make_temp_dir()), also_listen_on_(std::move(also_listen_on)) {
    const auto ports = free_ports();
    client_port_ = ports[0];
    peer_port_ = ports[1];
    start(ready_within);
  }
  etcd_process(const etcd_process&) = delete;
  etcd_process& operator=(const etcd_process&) = delete;
  ~etcd_process() {
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::uint16_t client_port() const noexcept { return client_port_; }
  etcd::endpoint endpoint() const { return {"127.0.0.1", client_port_}; }
  const std::filesystem::path& directory() const noexcept { return dir_; }
  bool running() const noexcept { return pid_ > 0; }

  // Starts etcd again (same ports, same data) if it is stopped.
  void start(std::chrono::milliseconds ready_within = std::chrono::seconds(20)) {
    if (running()) return;
    spawn();
    wait_ready(ready_within);
  }

  // Kills etcd at once, as a crash would, and reaps it.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

  // etcd's output so far (all runs).
  std::string log() const {
    std::ifstream in(dir_ / "etcd.log");
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
  }

 private:
  static std::filesystem::path make_temp_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "corokv-etcd-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
    return pattern;
  }

  // Two distinct ports the kernel considers free now. Both sockets are held
  // until both are chosen, so the two cannot be the same port.
  static std::array<std::uint16_t, 2> free_ports() {
    std::array<int, 2> fds{-1, -1};
    std::array<std::uint16_t, 2> ports{};
    for (std::size_t i = 0; i < 2; ++i) {
      fds[i] = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof addr;
      if (fds[i] < 0 || ::bind(fds[i], reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
          ::getsockname(fds[i], reinterpret_cast<sockaddr*>(&addr), &len) != 0)
        throw std::runtime_error("no free port: " + std::string(std::strerror(errno)));
      ports[i] = ntohs(addr.sin_port);
    }
    for (int fd : fds) ::close(fd);
    return ports;
  }

  void spawn() {
    std::string client_url = "http://127.0.0.1:" + std::to_string(client_port_);
    if (!also_listen_on_.empty()) client_url += ",http://" + also_listen_on_ + ":" + std::to_string(client_port_);
    const std::string peer_url = "http://127.0.0.1:" + std::to_string(peer_port_);
    const std::string name = "corokv-test";
    std::vector<std::string> args{executable(),
                                  "--name=" + name,
                                  "--data-dir=" + (dir_ / "data").string(),
                                  "--listen-client-urls=" + client_url,
                                  "--advertise-client-urls=" + client_url,
                                  "--listen-peer-urls=" + peer_url,
                                  "--initial-advertise-peer-urls=" + peer_url,
                                  "--initial-cluster=" + name + "=" + peer_url,
                                  "--initial-cluster-state=new"};
    // Built before fork: the child may only make async-signal-safe calls.
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log_path = (dir_ / "etcd.log").string();
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed: " + std::string(std::strerror(errno)));
    if (pid == 0) {
      // Dies with the thread that forked it; if that is already gone, now.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, STDOUT_FILENO);
        ::dup2(fd, STDERR_FILENO);
      }
      const int null_fd = ::open("/dev/null", O_RDONLY);
      if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pid_ = pid;
  }

  // Polls with range until etcd answers, it exits, or the deadline passes.
  void wait_ready(std::chrono::milliseconds within) {
    namespace asio = boost::asio;
    asio::io_context io;
    etcd::client probe(io.get_executor(), {{endpoint()}, std::chrono::milliseconds(500)});
    const auto deadline = std::chrono::steady_clock::now() + within;
    bool exited = false;
    auto poll = [&]() -> asio::awaitable<bool> {
      asio::steady_timer pause(io);
      while (std::chrono::steady_clock::now() < deadline) {
        auto [ec, r] = co_await probe.range("corokv-etcd-ready");
        if (!ec) co_return true;
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
          exited = true;
          co_return false;
        }
        pause.expires_after(std::chrono::milliseconds(50));
        co_await pause.async_wait(asio::use_awaitable);
      }
      co_return false;
    };
    auto ready = asio::co_spawn(io, poll(), asio::use_future);
    io.run_for(within + std::chrono::seconds(2));  // each probe is bounded; this bounds the whole wait
    const bool ok = ready.wait_for(std::chrono::seconds(0)) == std::future_status::ready && ready.get();
    if (ok) return;
    if (exited) pid_ = -1;  // already reaped
    stop();
    throw std::runtime_error(std::string("etcd did not become ready") + (exited ? " (it exited)" : "") +
                             "; its log:\n" + log());
  }

  std::filesystem::path dir_;
  std::string also_listen_on_;
  std::uint16_t client_port_ = 0;
  std::uint16_t peer_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace corokv::test
