#pragma once
// Child processes for the tests that run corokv's executables: started with
// their output in files, killed (SIGKILL) when the test lets go of them or
// when the test process itself dies (PR_SET_PDEATHSIG), so that no test
// leaves a process behind. Every wait has a deadline.

#include "scratch_dir.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace corokv::test {

// A child whose stdout goes to `out` and stderr to `out`.err.
class process {
 public:
  process(std::vector<std::string> args, const std::filesystem::path& out) : out_(out) {
    std::vector<char*> argv;  // built before fork: the child makes only async-signal-safe calls
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string out_path = out.string(), err_path = out.string() + ".err";
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    REQUIRE_MESSAGE(pid_ >= 0, "cannot fork for " << args[0]);
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      const int o = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int e = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (o >= 0) ::dup2(o, STDOUT_FILENO);
      if (e >= 0) ::dup2(e, STDERR_FILENO);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  process(const process&) = delete;
  process& operator=(const process&) = delete;
  ~process() {
    if (running()) {
      ::kill(pid_, SIGKILL);
      wait_exit(std::chrono::seconds(5));
    }
  }

  pid_t pid() const noexcept { return pid_; }
  bool running() const { return pid_ > 0 && !exited_; }
  void signal(int sig) const { ::kill(pid_, sig); }

  // The exit status (128 + signal if killed), or -1 if it did not exit
  // within `limit` (it is then killed).
  int wait_exit(std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!exited_) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (std::chrono::steady_clock::now() > until) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        exited_ = true;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return status_;
  }

  // Kills it now and reaps it, as a crash would end it.
  void kill_now() {
    if (!running()) return;
    ::kill(pid_, SIGKILL);
    wait_exit(std::chrono::seconds(5));
  }

  std::string output() const { return read(out_); }
  std::string errors() const { return read(out_.string() + ".err"); }

 private:
  static std::string read(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
  std::filesystem::path out_;
};

// Waits for a JSON file that a process writes once ready.
inline nlohmann::json wait_for_json(const std::filesystem::path& path,
                                    std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    std::ifstream in(path);
    if (in) {
      auto j = nlohmann::json::parse(in, nullptr, false);
      if (!j.is_discarded()) return j;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL("no ready file at " << path);
  return {};
}

// GET http://host:port/target (an admin port; host an IPv4 address): the
// body, or empty if unreachable. Blocking, with a 5 s receive timeout.
inline std::string http_get(const std::string& host, std::uint16_t port, const std::string& target) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {};
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string request = "GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
      char buf[4096];
      for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) response.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  const auto body = response.find("\r\n\r\n");
  return body == std::string::npos ? std::string{} : response.substr(body + 4);
}

inline std::string http_get(std::uint16_t port, const std::string& target) { return http_get("127.0.0.1", port, target); }

// The value of one sample on an admin port's /metrics, or -1.
inline long metric_of(const std::string& host, std::uint16_t admin_port, const std::string& name) {
  std::istringstream in(http_get(host, admin_port, "/metrics"));
  for (std::string line; std::getline(in, line);)
    if (line.rfind(name + " ", 0) == 0) return std::stol(line.substr(name.size() + 1));
  return -1;
}
inline long metric_of(std::uint16_t admin_port, const std::string& name) {
  return metric_of("127.0.0.1", admin_port, name);
}

}  // namespace corokv::test
