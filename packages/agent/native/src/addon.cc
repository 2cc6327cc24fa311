// JavaScript face of the engine (node-addon-api). Every call here is quick
// control-plane work on the JS thread; packets never come near it.
#include <arpa/inet.h>
#include <napi.h>

#include <memory>

#include "engine.h"
#include "netlink.h"
#include "packet.h"
#include "spawn.h"

namespace {

using weft::Engine;

in_addr_t parseIPv4(const Napi::Env& env, const std::string& text, const char* what) {
  in_addr a{};
  if (inet_pton(AF_INET, text.c_str(), &a) != 1)
    throw Napi::TypeError::New(env, std::string(what) + " \"" + text + "\" is not an IPv4 address");
  return a.s_addr;
}

uint64_t parseMac(const Napi::Env& env, const std::string& text) {
  unsigned b[6];
  char tail;
  if (text.size() != 17 ||
      sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
    throw Napi::TypeError::New(env, "MAC \"" + text + "\" is not of the form aa:bb:cc:dd:ee:ff");
  uint64_t k = 0;
  for (unsigned v : b) k = (k << 8) | v;
  return k;
}

uint32_t vniArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "VNI (a number) expected");
  return info[i].As<Napi::Number>().Uint32Value();
}

Napi::Object countersToJs(Napi::Env env, const weft::CountersSnapshot& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("txPackets", double(s.txPackets));
  o.Set("txBytes", double(s.txBytes));
  o.Set("rxPackets", double(s.rxPackets));
  o.Set("rxBytes", double(s.rxBytes));
  o.Set("arpReplies", double(s.arpReplies));
  o.Set("flooded", double(s.flooded));
  o.Set("txSuperFrames", double(s.txSuperFrames));
  o.Set("rxCoalescedFrames", double(s.rxCoalescedFrames));
  Napi::Object drops = Napi::Object::New(env);
  for (int i = 0; i < weft::kDropCount; i++) drops.Set(weft::kDropReasonNames[i], double(s.drops[i]));
  o.Set("drops", drops);
  return o;
}

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {
                           InstanceMethod("addNetwork", &EngineWrap::AddNetwork),
                           InstanceMethod("removeNetwork", &EngineWrap::RemoveNetwork),
                           InstanceMethod("setPeers", &EngineWrap::SetPeers),
                           InstanceMethod("counters", &EngineWrap::Counters),
                           InstanceMethod("close", &EngineWrap::Close),
                           InstanceMethod("injectTapFrame", &EngineWrap::InjectTapFrame),
                           InstanceMethod("injectDatagram", &EngineWrap::InjectDatagram),
                       });
  }

  // new Engine({ vtep: string, port?: number, netnsPath?: string, offloads?: boolean,
  //              threadPriority?: string, busyPollUs?: number, queues?: number,
  //              streamNapUs?: number })
  explicit EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "options object expected");
    Napi::Object o = info[0].As<Napi::Object>();
    weft::EngineOptions opts;
    if (!o.Get("vtep").IsString()) throw Napi::TypeError::New(env, "options.vtep (IPv4 address string) is required");
    opts.vtep = parseIPv4(env, o.Get("vtep").As<Napi::String>(), "options.vtep");
    if (o.Has("port") && !o.Get("port").IsUndefined()) {
      uint32_t port = o.Get("port").As<Napi::Number>().Uint32Value();
      if (port == 0 || port > 65535) throw Napi::RangeError::New(env, "options.port must be 1..65535");
      opts.port = uint16_t(port);
    }
    if (o.Has("netnsPath") && o.Get("netnsPath").IsString()) opts.netnsPath = o.Get("netnsPath").As<Napi::String>();
    if (o.Has("offloads") && o.Get("offloads").IsBoolean()) opts.offloads = o.Get("offloads").As<Napi::Boolean>();
    if (o.Has("threadPriority") && o.Get("threadPriority").IsString()) {
      std::string p = o.Get("threadPriority").As<Napi::String>();
      if (p == "realtime")
        opts.priority = weft::ThreadPriority::kRealtime;
      else if (p == "nice")
        opts.priority = weft::ThreadPriority::kNice;
      else if (p == "normal")
        opts.priority = weft::ThreadPriority::kNormal;
      else
        throw Napi::TypeError::New(env, "options.threadPriority must be \"realtime\", \"nice\" or \"normal\"");
    }
    if (o.Has("busyPollUs") && !o.Get("busyPollUs").IsUndefined()) {
      Napi::Value v = o.Get("busyPollUs");
      double us = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      if (!(us >= 0 && us <= 10000) || us != double(uint32_t(us)))
        throw Napi::RangeError::New(env, "options.busyPollUs must be an integer 0..10000 (microseconds; 0 = never busy-poll)");
      opts.busyPollUs = uint32_t(us);
    }
    if (o.Has("streamNapUs") && !o.Get("streamNapUs").IsUndefined()) {
      Napi::Value v = o.Get("streamNapUs");
      double us = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      if (!(us >= 0 && us <= 5000) || us != double(uint32_t(us)))
        throw Napi::RangeError::New(env, "options.streamNapUs must be an integer 0..5000 (microseconds; 0 = never nap)");
      opts.streamNapUs = int32_t(us);
    }
    if (o.Has("queues") && !o.Get("queues").IsUndefined()) {
      Napi::Value v = o.Get("queues");
      double n = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      if (!(n >= 0 && n <= weft::kMaxQueues) || n != double(uint32_t(n)))
        throw Napi::RangeError::New(env, "options.queues must be an integer 0.." + std::to_string(weft::kMaxQueues) +
                                             " (packet threads; 0 = one per CPU)");
      opts.queues = uint32_t(n);
    }
    try {
      engine_ = std::make_unique<Engine>(opts);
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
  }

 private:
  Engine& engine(Napi::Env env) {
    if (!engine_) throw Napi::Error::New(env, "the engine is closed");
    return *engine_;
  }

  // addNetwork(vni, tapName)
  Napi::Value AddNetwork(const Napi::CallbackInfo& info) {
    uint32_t vni = vniArg(info, 0);
    if (info.Length() < 2 || !info[1].IsString()) throw Napi::TypeError::New(info.Env(), "TAP name expected");
    try {
      engine(info.Env()).addNetwork(vni, info[1].As<Napi::String>());
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
    return info.Env().Undefined();
  }

  Napi::Value RemoveNetwork(const Napi::CallbackInfo& info) {
    engine(info.Env()).removeNetwork(vniArg(info, 0));
    return info.Env().Undefined();
  }

  // setPeers(vni, [{ mac, vtep, ip? }]) replaces the network's whole table.
  Napi::Value SetPeers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t vni = vniArg(info, 0);
    if (info.Length() < 2 || !info[1].IsArray()) throw Napi::TypeError::New(env, "peer array expected");
    Napi::Array arr = info[1].As<Napi::Array>();
    auto table = std::make_shared<weft::PeerTable>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsObject()) throw Napi::TypeError::New(env, "peer " + std::to_string(i) + " is not an object");
      Napi::Object p = v.As<Napi::Object>();
      if (!p.Get("mac").IsString() || !p.Get("vtep").IsString())
        throw Napi::TypeError::New(env, "peer " + std::to_string(i) + " needs string fields mac and vtep");
      uint64_t mac = parseMac(env, p.Get("mac").As<Napi::String>());
      in_addr_t vtep = parseIPv4(env, p.Get("vtep").As<Napi::String>(), "peer vtep");
      table->vtepByMac[mac] = vtep;
      if (p.Get("ip").IsString()) {
        in_addr_t ip = parseIPv4(env, p.Get("ip").As<Napi::String>(), "peer ip");
        table->macByIp[ntohl(ip)] = mac;
      }
      bool seen = false;
      for (in_addr_t t : table->vteps) seen = seen || t == vtep;
      if (!seen) table->vteps.push_back(vtep);
    }
    try {
      engine(env).setPeers(vni, table);
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
    return env.Undefined();
  }

  // counters() -> { networks: { [vni]: {...} }, host: {...}, thread: {...} }
  Napi::Value Counters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    Napi::Object nets = Napi::Object::New(env);
    for (auto& [vni, s] : engine(env).networkCounters()) nets.Set(std::to_string(vni), countersToJs(env, s));
    out.Set("networks", nets);
    out.Set("host", countersToJs(env, engine(env).hostCounters()));
    weft::ThreadStats t = engine(env).threadStats();
    Napi::Object thread = Napi::Object::New(env);
    thread.Set("wakeups", double(t.wakeups));
    thread.Set("busyPollHits", double(t.busyPollHits));
    thread.Set("busyPolls", double(t.busyPolls));
    thread.Set("naps", double(t.naps));
    thread.Set("busyPollWindowUs", double(t.busyPollWindowNs) / 1000);
    thread.Set("threads", double(t.threads));
    thread.Set("steersByCpu", t.steersByCpu);
    thread.Set("streamNapUs", double(t.streamNapUs));
    std::string steeringError = engine(env).steeringError();
    if (steeringError.empty())
      thread.Set("steeringError", env.Null());
    else
      thread.Set("steeringError", steeringError);
    auto queues = engine(env).queueStats();
    Napi::Array perQueue = Napi::Array::New(env, queues.size());
    for (size_t i = 0; i < queues.size(); i++) {
      Napi::Object q = Napi::Object::New(env);
      if (queues[i].cpu >= 0)
        q.Set("cpu", double(queues[i].cpu));
      else
        q.Set("cpu", env.Null());
      q.Set("rounds", double(queues[i].rounds));
      q.Set("wakeups", double(queues[i].wakeups));
      perQueue.Set(uint32_t(i), q);
    }
    thread.Set("queues", perQueue);
    out.Set("thread", thread);
    return out;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (engine_) engine_->close();
    engine_.reset();
    return info.Env().Undefined();
  }

  Napi::Value InjectTapFrame(const Napi::CallbackInfo& info) {
    uint32_t vni = vniArg(info, 0);
    if (info.Length() < 2 || !info[1].IsBuffer()) throw Napi::TypeError::New(info.Env(), "Buffer expected");
    auto b = info[1].As<Napi::Buffer<uint8_t>>();
    try {
      engine(info.Env()).injectTapFrame(vni, b.Data(), b.Length());
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
    return info.Env().Undefined();
  }

  Napi::Value InjectDatagram(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsBuffer()) throw Napi::TypeError::New(info.Env(), "Buffer expected");
    auto b = info[0].As<Napi::Buffer<uint8_t>>();
    size_t segment = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Uint32Value() : 0;
    engine(info.Env()).injectDatagram(b.Data(), b.Length(), segment);
    return info.Env().Undefined();
  }

  std::unique_ptr<Engine> engine_;
};

Napi::Value LiveThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), Engine::liveThreads()); }

// Test hook: the Internet checksum the engine would store for the bytes, as
// the big-endian number on the wire (checks the vectorised sum against a
// reference on odd lengths and unaligned starts).
Napi::Value InternetChecksum(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsBuffer()) throw Napi::TypeError::New(info.Env(), "Buffer expected");
  auto b = info[0].As<Napi::Buffer<uint8_t>>();
  uint8_t out[2];
  weft::checksumStore(out, weft::checksumAdd(b.Data(), b.Length(), 0));
  return Napi::Number::New(info.Env(), (out[0] << 8) | out[1]);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", EngineWrap::Init(env));
  exports.Set("liveThreads", Napi::Function::New(env, LiveThreads));
  exports.Set("internetChecksum", Napi::Function::New(env, InternetChecksum));
  Napi::Array reasons = Napi::Array::New(env, weft::kDropCount);
  for (int i = 0; i < weft::kDropCount; i++) reasons.Set(uint32_t(i), weft::kDropReasonNames[i]);
  exports.Set("dropReasons", reasons);
  weft::InitSpawn(env, exports);
  weft::InitNetlink(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(weft_native, Init)
