// Container namespaces and wiring over rtnetlink, off the event loop (see netlink.cc).
#pragma once
#include <napi.h>

namespace weft {

/** Adds netnsCreate and netlinkApply to the addon's exports. */
void InitNetlink(Napi::Env env, Napi::Object exports);

}  // namespace weft
