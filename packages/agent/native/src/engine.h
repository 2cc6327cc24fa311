// The userspace VXLAN engine: one UDP socket per host (VTEP address, port
// 4789) shared by all networks and demultiplexed by VNI, one TAP device per
// network. One packet thread per engine waits on all of them (epoll) and does
// all the work of what it read itself: TAP frames are encapsulated and sent,
// datagrams are decapsulated, coalesced and written to their TAP, and the
// answer the TAP then holds is sent at once. No queues or hand-offs between
// threads, so a round trip wakes the thread at most once per host and
// direction, and adaptive busy polling saves most of the rest. The thread
// never touches JavaScript; JS changes the peer tables by swapping immutable
// snapshots.
#pragma once

#include <netinet/in.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace weft {

enum DropReason : int {
  kDropShortFrame,          // TAP frame shorter than virtio header + Ethernet
  kDropBadOffloadHeader,    // virtio-net header the engine cannot honour
  kDropUnknownDestination,  // unicast to a MAC no peer has
  kDropArpUnanswered,       // ARP request for an IP no peer has (proxy mode)
  kDropNoVtep,              // broadcast/multicast with no remote host in the network
  kDropSendError,           // sendmmsg refused the datagram
  kDropTapWriteError,       // the TAP refused the frame (device down?)
  kDropShortDatagram,       // UDP payload shorter than VXLAN + Ethernet
  kDropBadVxlanFlags,       // VXLAN flags/reserved bits not as RFC 7348 sends them
  kDropUnknownVni,          // no network with that VNI on this host
  kDropTruncatedDatagram,   // larger than the receive buffer
  kDropTapReadError,        // reading the TAP failed (its device was deleted?)
  kDropCount
};
extern const char* const kDropReasonNames[kDropCount];

struct Counters {
  std::atomic<uint64_t> txPackets{0}, txBytes{0}, rxPackets{0}, rxBytes{0}, arpReplies{0}, flooded{0};
  // Offload activity: TSO super-frames segmented on the way out, and TAP
  // writes that carried several coalesced segments on the way in.
  std::atomic<uint64_t> txSuperFrames{0}, rxCoalescedFrames{0};
  std::array<std::atomic<uint64_t>, kDropCount> drops{};
  void drop(DropReason r, uint64_t n = 1) { drops[r].fetch_add(n, std::memory_order_relaxed); }
};

// What the packet thread did about waiting: rounds after a blocking wait (a
// wake-up), rounds whose work busy polling found (a wake-up saved), and the
// current adaptive busy-poll window.
struct ThreadStats {
  uint64_t wakeups, busyPollHits, busyPollWindowNs;
  uint64_t busyPolls;    // rounds that ended in a busy-poll spell (hit or not)
  uint64_t naps;         // stream naps (EngineOptions::streamNapUs)
  uint64_t cpuMoves;     // times the thread confined itself to its waker's CPU (CpuFollower)
  uint64_t cpuReleases;  // times bulk traffic or a busy spell released it to every allowed CPU
  int32_t cpu;           // the CPU it is confined to now; -1 = every allowed CPU
};

struct CountersSnapshot {
  uint64_t txPackets, txBytes, rxPackets, rxBytes, arpReplies, flooded, txSuperFrames, rxCoalescedFrames;
  std::array<uint64_t, kDropCount> drops;
};

// Immutable once published; readers hold a shared_ptr for one batch.
struct PeerTable {
  std::unordered_map<uint64_t, in_addr_t> vtepByMac;  // MAC key -> VTEP (network order)
  std::unordered_map<uint32_t, uint64_t> macByIp;     // IPv4 (host order) -> MAC key
  std::vector<in_addr_t> vteps;                       // distinct VTEPs, for flooding
};

struct Network {
  uint32_t vni = 0;
  std::string tapName;
  int tapFd = -1;
  int spareQueueFd = -1;  // second queue of a multi-queue TAP, never read (see WakerCpuProbe)
  bool tapFailed = false;  // the TAP reported an error and left the poll set; packet thread only
  std::shared_ptr<const PeerTable> peers;  // accessed with std::atomic_load/store
  Counters counters;
  ~Network();
};

enum class ThreadPriority { kNormal, kNice, kRealtime };

struct EngineOptions {
  std::string netnsPath;  // empty = the calling process's namespace
  in_addr_t vtep = 0;     // network order
  uint16_t port = 4789;
  bool offloads = true;   // TAP TSO/checksum offload, UDP GSO/GRO, coalescing
  ThreadPriority priority = ThreadPriority::kRealtime;
  // Longest busy-poll window after a round of work, in microseconds; 0 = the
  // thread always blocks when it runs out of work. See BusyPoll in engine.cc.
  uint32_t busyPollUs = 200;
  // While traffic is sparse (request/response), keep the thread on the CPU
  // of whoever wakes it, so it wakes without an inter-processor interrupt.
  // See CpuFollower in engine.cc.
  bool followWakerCpu = true;
  // While a stream flows, the thread sleeps this long when it runs out of
  // work instead of waiting to be woken per frame; 0 = never. See
  // Engine::loop.
  uint32_t streamNapUs = 200;
};

using NetworkMap = std::unordered_map<uint32_t, std::shared_ptr<Network>>;

class TxBatch;
class Coalescer;
struct TapScratch;
struct RxScratch;
struct RoundResult;
class WakerCpuProbe;

class Engine {
 public:
  explicit Engine(const EngineOptions& options);  // throws std::runtime_error
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void addNetwork(uint32_t vni, const std::string& tapName);
  void removeNetwork(uint32_t vni);
  void setPeers(uint32_t vni, std::shared_ptr<const PeerTable> table);
  std::vector<std::pair<uint32_t, CountersSnapshot>> networkCounters() const;
  CountersSnapshot hostCounters() const;
  ThreadStats threadStats() const;
  // Whether the packet thread follows its wakers' CPUs (EngineOptions::followWakerCpu),
  // and if it was asked to but cannot, why.
  bool followsWakerCpu() const;
  std::string followWakerCpuError() const;
  void close();

  // Test hooks (fuzzing): run exactly the code the threads run on one input.
  // tapFrame = virtio-net header + Ethernet frame; datagram = VXLAN payload
  // of a UDP datagram, possibly several GRO segments of segmentBytes each.
  void injectTapFrame(uint32_t vni, const uint8_t* data, size_t bytes);
  void injectDatagram(const uint8_t* data, size_t bytes, size_t segmentBytes);

  static int liveThreads() { return liveThreads_.load(); }

  // Used by the batch helpers.
  int udpFd() const { return udpFd_; }
  uint16_t port() const { return port_; }

 private:
  friend class Coalescer;
  void loop();
  // One batch from the TAP (read, encapsulate, send); frames read. Adds the
  // bytes read and the number of unicast frames among them. lone: the round
  // is sparse traffic, stop after one small frame (see Engine::loop).
  size_t drainTap(Network* net, TapScratch& scratch, bool lone, size_t* bytes, size_t* unicast);
  // One recvmmsg batch, delivered, then the answers the TAPs hold sent.
  // Caller holds roundMutex_ and passes the map snapshot it uses.
  void receiveBatch(const NetworkMap& nets, RxScratch& rx, bool lone, RoundResult& result);
  void handleTapFrame(Network* net, const PeerTable& peers, uint8_t* buf, size_t bytes, TxBatch& batch);
  void handleDatagram(const NetworkMap& nets, const uint8_t* p, size_t bytes, Coalescer& coalescer);
  std::shared_ptr<const NetworkMap> networks() const;
  void removeLocked(uint32_t vni);

  EngineOptions options_;
  uint16_t port_;
  int udpFd_ = -1;
  int stopFd_ = -1;
  std::unique_ptr<WakerCpuProbe> wakerCpuProbe_;  // CPUs that last made the thread runnable (CpuFollower)
  int epollFd_ = -1;
  std::thread thread_;
  mutable std::mutex controlMutex_;  // serialises add/remove/close
  std::mutex roundMutex_;    // held by the packet thread while it uses a map snapshot
  std::shared_ptr<const NetworkMap> networks_;
  Counters host_;
  std::atomic<uint64_t> wakeups_{0}, naps_{0}, busyPolls_{0}, busyPollHits_{0}, busyPollWindowNs_{0}, cpuMoves_{0}, cpuReleases_{0};
  std::atomic<int32_t> followedCpu_{-1};
  bool closed_ = false;
  static std::atomic<int> liveThreads_;
};

}  // namespace weft
