// A downstream program: includes corokv as a user would and checks that the
// library it got works (a put, a query, an error message).

#include <corokv/corokv.hpp>

#include <cstdio>
#include <string>
#include <vector>

int main() {
  corokv::meta::service svc;
  if (svc.mount_segment(1, 1 << 20).status != corokv::errc::success) return 1;
  std::vector<std::string> keys{"consumer-key"};
  std::vector<std::uint64_t> sizes{4096};
  std::vector<corokv::put_start_result> started(1);
  svc.put_start(keys, sizes, {}, 0, started);
  std::vector<corokv::version_t> versions{started[0].version};
  std::vector<corokv::errc> ended(1);
  svc.put_end(keys, versions, ended);
  std::vector<corokv::query_result> q(1);
  svc.query(keys, q);
  const std::error_code missing = corokv::errc::not_found;
  const bool ok = q[0].ok() && q[0].size == 4096 && missing.message() == "key not found" &&
                  std::string(missing.category().name()) == "corokv";
  std::printf("consumer: %s\n", ok ? "corokv works" : "corokv is broken");
  return ok ? 0 : 1;
}
