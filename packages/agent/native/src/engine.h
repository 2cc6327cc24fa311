// The userspace VXLAN engine, multi-queue as a NIC with RSS/XPS: one queue
// per CPU, and per queue a packet thread bound to that CPU, one socket of a
// SO_REUSEPORT group on the VTEP address (port 4789, shared by all networks
// and demultiplexed by VNI) and one queue of each network's multi-queue TAP.
// Two steering programs put every packet in the queue of the CPU it shows up
// on: a classic BPF program on the socket group (the CPU whose softirq
// received the datagram) and an eBPF program on each TAP (the CPU whose
// process sent the frame). So a packet thread is always woken by its own
// CPU, where the kernel's VXLAN would have done the same work in softirq:
// a wake-up across CPUs costs 75-200 us on a 2-vCPU VM (an IPI, a halted
// virtual CPU resumed by the host), a wake-up on the same CPU ~5 us. Each
// thread does all the work of what it read itself: TAP frames are
// encapsulated and sent, datagrams are decapsulated, coalesced and written to
// their TAP, and the answer the TAP then holds is sent at once; there are no
// hand-offs between threads. The threads never touch JavaScript; JS changes
// the peer tables by swapping immutable snapshots.
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

// What the packet threads did about waiting, summed over them: rounds after
// a blocking wait (a wake-up), rounds whose work busy polling found (a
// wake-up saved), and the longest current adaptive busy-poll window.
struct ThreadStats {
  uint64_t wakeups, busyPollHits, busyPollWindowNs;
  uint64_t busyPolls;  // rounds that ended in a busy-poll spell (hit or not)
  uint64_t naps;       // stream naps (EngineOptions::streamNapUs)
  uint32_t streamNapUs;  // the nap in effect (the option, or the automatic choice)
  uint32_t threads;    // packet threads (= queues)
  // Packets land in the queue of the CPU they show up on (false: the
  // kernel's flow hash picks the queue, see Engine::steeringError()).
  bool steersByCpu;
};

// One queue's packet thread: where it runs and how much it did.
struct QueueStats {
  int32_t cpu;  // the CPU its thread is bound to; -1 = any the process may use
  uint64_t rounds;   // rounds with work
  uint64_t wakeups;  // of those, after a blocking wait
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
  std::vector<int> tapFds;  // one per queue
  // Per queue: the TAP reported an error and that queue left the poll set.
  // Each element belongs to its queue's packet thread alone.
  std::vector<uint8_t> tapFailed;
  std::shared_ptr<const PeerTable> peers;  // accessed with std::atomic_load/store
  Counters counters;
  ~Network();
};

enum class ThreadPriority { kNormal, kNice, kRealtime };

// The automatic stream nap where packets are not steered by CPU.
constexpr uint32_t kAutoStreamNapUs = 200;

struct EngineOptions {
  std::string netnsPath;  // empty = the calling process's namespace
  in_addr_t vtep = 0;     // network order
  uint16_t port = 4789;
  bool offloads = true;   // TAP TSO/checksum offload, UDP GSO/GRO, coalescing
  ThreadPriority priority = ThreadPriority::kRealtime;
  // Longest busy-poll window after a round of work, in microseconds; 0 = the
  // thread always blocks when it runs out of work. See BusyPoll in engine.cc.
  uint32_t busyPollUs = 200;
  // Queues, each with its packet thread; 0 = one per CPU (at most
  // kMaxQueues). 1 = a single thread on any CPU, no steering.
  uint32_t queues = 0;
  // While a stream flows, the thread sleeps this long when it runs out of
  // work instead of waiting to be woken per frame; 0 = never; -1 (the
  // default) = automatic: 0 while packets are steered by CPU (a queue's
  // thread is then woken from its own CPU, a switch, cheaper than the
  // nap's timer interrupt), kAutoStreamNapUs when they are not (one queue,
  // or no steering: wake-ups cross CPUs). See Engine::loop.
  int32_t streamNapUs = -1;
};

using NetworkMap = std::unordered_map<uint32_t, std::shared_ptr<Network>>;

class TxBatch;
class Coalescer;
struct TapScratch;
struct RxScratch;
struct RoundResult;
class CpuSteering;
struct Worker;
constexpr uint32_t kMaxQueues = 64;

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
  std::vector<QueueStats> queueStats() const;
  // Why packets are not steered to the queue of their CPU although there are
  // several queues (e.g. no CAP_BPF); empty if they are, or with one queue.
  std::string steeringError() const;
  void close();

  // Test hooks (fuzzing): run exactly the code the threads run on one input.
  // tapFrame = virtio-net header + Ethernet frame; datagram = VXLAN payload
  // of a UDP datagram, possibly several GRO segments of segmentBytes each.
  void injectTapFrame(uint32_t vni, const uint8_t* data, size_t bytes);
  void injectDatagram(const uint8_t* data, size_t bytes, size_t segmentBytes);

  static int liveThreads() { return liveThreads_.load(); }

 private:
  friend class Coalescer;
  void loop(Worker& w);
  // One batch from the worker's queue of a TAP (read, encapsulate, send);
  // frames read. Adds the bytes read. lone: the round is sparse traffic,
  // stop after one small frame (see Engine::loop).
  size_t drainTap(Worker& w, Network* net, TapScratch& scratch, bool lone, size_t* bytes);
  // One recvmmsg batch from the worker's socket, delivered, then the answers
  // the TAPs hold sent. Caller holds the worker's roundMutex and passes the
  // map snapshot it uses.
  void receiveBatch(Worker& w, const NetworkMap& nets, RxScratch& rx, bool lone, RoundResult& result);
  void handleTapFrame(Network* net, size_t queue, const PeerTable& peers, uint8_t* buf, size_t bytes, TxBatch& batch);
  void handleDatagram(const NetworkMap& nets, const uint8_t* p, size_t bytes, Coalescer& coalescer);
  std::shared_ptr<const NetworkMap> networks() const;
  void removeLocked(uint32_t vni);
  void closeQueues();
  // Whether packets land in the queue of their CPU (several queues, every
  // steering program in place); under controlMutex_ or before the threads run.
  bool steersByCpuLocked() const;
  // Sets streamNapUs_ from the option, or for -1 from steersByCpuLocked();
  // called whenever steering may have failed.
  void updateStreamNap();

  EngineOptions options_;
  uint16_t port_;
  size_t queues_ = 1;
  int stopFd_ = -1;
  std::unique_ptr<CpuSteering> steering_;
  // Sockets on ephemeral ports of the VTEP address that every packet thread
  // sends from, picked by the inner flow's hash (openSourceSocket): one set
  // for all threads, so a flow keeps its port when its sender changes CPU.
  // Declared before workers_: closed after the threads are gone.
  struct OwnedFds {
    std::vector<int> fds;
    OwnedFds() = default;
    OwnedFds(const OwnedFds&) = delete;
    OwnedFds& operator=(const OwnedFds&) = delete;
    ~OwnedFds() { closeAll(); }
    void closeAll();
  } sourceFds_;
  std::vector<std::unique_ptr<Worker>> workers_;
  mutable std::mutex controlMutex_;  // serialises add/remove/close
  std::shared_ptr<const NetworkMap> networks_;
  Counters host_;
  std::atomic<uint64_t> lastBulkNs_{0};  // end of the last bulk round of any thread (see Engine::loop)
  std::atomic<uint32_t> streamNapUs_{0};  // the stream nap in effect (updateStreamNap)
  bool closed_ = false;
  static std::atomic<int> liveThreads_;
};

}  // namespace weft
