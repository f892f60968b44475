#pragma once
// Hosts for process tests: network namespaces, each joined by a veth link to
// a bridge in the test's own namespace, so that every process has its own
// address and its traffic crosses a real interface between distinct hosts
// (no same-host shortcut applies). Made with iproute2, which needs root;
// make() returns nullptr where they cannot be made, and the caller falls
// back to loopback and says so.

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace corokv::test {

class test_hosts {
 public:
  static std::unique_ptr<test_hosts> make(std::size_t n) {
    if (::geteuid() != 0 || ::access("/usr/sbin/ip", X_OK) != 0) return nullptr;
    std::unique_ptr<test_hosts> h(new test_hosts(n));
    if (!h->build()) return nullptr;  // the destructor removes what was made
    return h;
  }
  test_hosts(const test_hosts&) = delete;
  test_hosts& operator=(const test_hosts&) = delete;
  ~test_hosts() {
    for (std::size_t i = 0; i < n_; ++i) run("ip netns del " + ns(i));  // takes its veth pair with it
    run("ip link del " + bridge_);
  }

  std::size_t size() const noexcept { return n_; }
  // The test's own address on the bridge, reachable from every host.
  std::string bridge_address() const { return subnet_ + ".1"; }
  std::string address(std::size_t i) const { return subnet_ + "." + std::to_string(10 + i); }
  // `args` run on host i.
  std::vector<std::string> on_host(std::size_t i, std::vector<std::string> args) const {
    std::vector<std::string> out{"/usr/sbin/ip", "netns", "exec", ns(i)};
    out.insert(out.end(), args.begin(), args.end());
    return out;
  }

 private:
  explicit test_hosts(std::size_t n) : n_(n) {
    const unsigned id = static_cast<unsigned>(::getpid()) % 10000;
    tag_ = std::to_string(id);
    bridge_ = "ckvbr" + tag_;
    subnet_ = "10.77." + std::to_string(id % 250 + 1);
  }
  std::string ns(std::size_t i) const { return "ckv" + tag_ + "-" + std::to_string(i); }

  static bool run(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

  bool build() {
    if (!run("ip link add " + bridge_ + " type bridge") || !run("ip addr add " + bridge_address() + "/24 dev " + bridge_) ||
        !run("ip link set " + bridge_ + " up"))
      return false;
    for (std::size_t i = 0; i < n_; ++i) {
      const std::string outer = "ckv" + tag_ + "o" + std::to_string(i), inner = "ckv" + tag_ + "i" + std::to_string(i);
      if (!run("ip netns add " + ns(i)) || !run("ip link add " + outer + " type veth peer name " + inner) ||
          !run("ip link set " + inner + " netns " + ns(i)) || !run("ip link set " + outer + " master " + bridge_) ||
          !run("ip link set " + outer + " up") || !run("ip -n " + ns(i) + " link set lo up") ||
          !run("ip -n " + ns(i) + " addr add " + address(i) + "/24 dev " + inner) ||
          !run("ip -n " + ns(i) + " link set " + inner + " up"))
        return false;
    }
    // Every host reaches every other and the bridge (a ping each way would
    // cost a second; a link that is up and addressed is enough here).
    return true;
  }

  std::size_t n_;
  std::string tag_, bridge_, subnet_;
};

}  // namespace corokv::test
