{
  "targets": [
    {
      "target_name": "weft_native",
      "sources": ["src/addon.cc", "src/engine.cc", "src/packet.cc", "src/spawn.cc", "src/netlink.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "libraries": ["-lmnl"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", {"sources!": ["src/addon.cc", "src/engine.cc", "src/packet.cc", "src/spawn.cc", "src/netlink.cc"]}]]
    }
  ]
}
