// Command runner without a fork of the agent on its event loop (see spawn.cc).
#pragma once
#include <napi.h>

namespace weft {

/** Adds runCommand to the addon's exports. */
void InitSpawn(Napi::Env env, Napi::Object exports);

}  // namespace weft
