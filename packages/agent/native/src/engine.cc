#include "engine.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/udp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/sysinfo.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <stdexcept>

#include "packet.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

namespace weft {

const char* const kDropReasonNames[kDropCount] = {
    "short_frame",  "bad_offload_header", "unknown_destination", "arp_unanswered",  "no_vtep",
    "send_error",   "tap_write_error",    "short_datagram",      "bad_vxlan_flags", "unknown_vni",
    "truncated_datagram", "tap_read_error",
};

std::atomic<int> Engine::liveThreads_{0};

namespace {

// Every batch and buffer has a bound.
constexpr size_t kMaxFrameBytes = 65536 + 512;               // TSO super-frame + headers
constexpr size_t kTapReadBatch = 16;                          // frames read per TX round
constexpr size_t kRxMessages = 16;                            // datagrams per recvmmsg
constexpr size_t kRxBufferBytes = 65536 + 4096;               // one GRO datagram
constexpr size_t kMaxUdpGsoSegments = 64;                     // UDP_MAX_SEGMENTS on older kernels
constexpr size_t kMaxUdpPayloadBytes = 65535 - 20 - 8;        // one IPv4 datagram
constexpr size_t kMaxCoalescedSegments = 64;
constexpr size_t kMaxCoalescedIpBytes = 65535;
constexpr size_t kLoneFrameBytes = 2048;                      // a request or answer, not a TSO super-frame
constexpr int kSocketBufferBytes = 8 << 20;
constexpr size_t kSourcePorts = 8;                             // sending sockets, shared by the threads

std::string errnoText(const char* what) { return std::string(what) + ": " + strerror(errno); }

// The spawner counts a thread in before it starts (so a count read right
// after a call is exact); the thread counts itself out as it ends.
struct ThreadExit {
  std::atomic<int>& n;
  ~ThreadExit() { n.fetch_sub(1); }
};

// Runs fn with the calling thread inside the network namespace at path. A
// helper thread does the setns so the JS thread never changes namespace; file
// descriptors made there stay bound to that namespace for good.
void runInNetns(const std::string& path, const std::function<void()>& fn) {
  if (path.empty()) {
    fn();
    return;
  }
  std::string error;
  std::thread t([&] {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      error = errnoText(("cannot open network namespace " + path).c_str());
      return;
    }
    if (setns(fd, CLONE_NEWNET) != 0) {
      error = errnoText(("cannot enter network namespace " + path).c_str());
      ::close(fd);
      return;
    }
    ::close(fd);
    try {
      fn();
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  t.join();
  if (!error.empty()) throw std::runtime_error(error);
}

// Packet threads wake for every burst. On a busy host an ordinary thread can
// wait a whole scheduler slice before it runs, which dwarfs an overlay round
// trip; the kernel's VXLAN does the same work in softirq context, ahead of
// every task. SCHED_FIFO at the lowest real-time priority is the closest a
// thread gets to that: it preempts ordinary tasks but still only runs when a
// packet is there (it blocks in poll otherwise), and the kernel's RT
// throttling keeps 5% of each CPU for everything else. Without the privilege
// the thread falls back to nice -10, then to nothing.
void applyThreadPriority(ThreadPriority priority) {
  if (priority == ThreadPriority::kRealtime) {
    sched_param p{};
    p.sched_priority = 1;
    if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &p) == 0) return;
  }
  if (priority != ThreadPriority::kNormal) setpriority(PRIO_PROCESS, pid_t(syscall(SYS_gettid)), -10);
}

// Real time only while traffic comes in bursts. A thread busy for longer
// than kBusyBudget without going idle steps down to an ordinary (nice -10)
// thread until it next runs out of work, as the kernel hands softirq work to
// ksoftirqd under sustained load, so a flood can never starve the agent (its
// Raft timers) or the containers.
class PriorityGovernor {
 public:
  explicit PriorityGovernor(ThreadPriority priority) {
    applyThreadPriority(priority);
    realtime_ = wantRealtime_ = sched_getscheduler(0) == SCHED_FIFO;
  }
  // Called after a round that had work; true when this round made the
  // thread step down.
  bool busy() {
    if (!realtime_) return false;
    auto now = std::chrono::steady_clock::now();
    if (!busyStarted_) {
      busySince_ = now;
      busyStarted_ = true;
    } else if (now - busySince_ > kBusyBudget) {
      sched_param p{};
      pthread_setschedparam(pthread_self(), SCHED_OTHER, &p);
      setpriority(PRIO_PROCESS, pid_t(syscall(SYS_gettid)), -10);
      realtime_ = false;
      return true;
    }
    return false;
  }
  // Called before blocking: the burst is over.
  void idle() {
    busyStarted_ = false;
    if (wantRealtime_ && !realtime_) {
      sched_param p{};
      p.sched_priority = 1;
      realtime_ = pthread_setschedparam(pthread_self(), SCHED_FIFO, &p) == 0;
    }
  }

 private:
  static constexpr std::chrono::milliseconds kBusyBudget{2};
  bool realtime_ = false, wantRealtime_ = false, busyStarted_ = false;
  std::chrono::steady_clock::time_point busySince_;
};

void signalStop(int eventFd) {
  uint64_t one = 1;
  ssize_t r = write(eventFd, &one, sizeof one);
  (void)r;
}

uint64_t nowNs() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return uint64_t(t.tv_sec) * 1000000000u + uint64_t(t.tv_nsec);
}

// Adaptive busy polling. Each wake-up of a sleeping thread costs tens of
// microseconds (an IPI, a halted virtual CPU to resume, a context switch),
// and a round trip through two userspace engines has several, where the
// kernel's VXLAN runs the whole trip in softirqs. After a small round that
// sent to the underlay (a request, not a bulk transfer: batching already
// amortises wake-ups there) the thread keeps polling without blocking for a
// window, so the answer from the other host needs no wake-up. Only then:
// after delivering to a container the answer must come from a process that
// needs this CPU, and spinning (at real-time priority, so an ordinary
// process on the loaded machine cannot preempt the spinner and delay what it
// waits for) would only delay it. The window adapts as KVM's halt polling
// does (virt/kvm/kvm_main.c, grow/shrink_halt_poll_ns): woken within the
// longest window after such a round, it grows (doubling from 10 us); woken
// later, it shrinks (halving, then 0). A ping's sender learns to wait the
// round trip out; its receiver, bulk transfers and an idle data plane never
// spin, and idle costs no CPU.
class BusyPoll {
 public:
  static constexpr size_t kMaxRoundBytes = 16384;  // a request/response exchange, not bulk data
  // A light round this soon after a bulk round belongs to a stream (its
  // ACKs, a short segment): no spinning then. With streams the machine's
  // cores are busy with the senders, receivers and both directions of the
  // engine, and a real-time spinner only keeps them from it (a
  // single-stream profile on 2 vCPUs: 4-5% of each packet thread in
  // sched_yield/schedule of spins during the stream).
  static constexpr uint64_t kQuietAfterBulkNs = 1000000;
  explicit BusyPoll(uint32_t maxUs)
      : maxNs_(uint64_t(maxUs) * 1000), growStartNs_(std::min<uint64_t>(maxNs_, 10000)) {}
  uint64_t windowNs() const { return windowNs_; }
  // The thread blocked after a spin-worthy round and woke gapNs after it.
  void blocked(uint64_t gapNs) {
    if (gapNs > maxNs_) {
      windowNs_ /= 2;
      if (windowNs_ < growStartNs_) windowNs_ = 0;
    } else if (gapNs > windowNs_) {
      windowNs_ = std::min(maxNs_, std::max(growStartNs_, windowNs_ * 2));
    }
  }

 private:
  uint64_t maxNs_, growStartNs_;
  uint64_t windowNs_ = 0;
};

}  // namespace

// Steering by CPU (see engine.h), kept flow-consistent for TCP.
//
// Datagrams: classic BPF on the socket group (no privilege needed) loads the
// CPU whose softirq received the datagram and returns it as the index of
// the socket to deliver to (sockets join the group in queue order). A
// flow's datagrams come from one sending thread, so they stay in order.
//
// TAP frames: an eBPF queue-steering program returns the sender's CPU, with
// one exception. A TCP flow's frames do not all come from one CPU: its
// sender's write() runs on one, but the stack also transmits from the
// softirq that took the ACKs, on another, and two queues read by two
// threads would reorder the flow (measured: 42,698 SACK reorder events and
// 45,787 spurious retransmits in a 4 s stream). So a TCP flow (keyed by the
// hash its socket stamped on the frame) stays on the queue of the CPU that
// sent its first frame, as the kernel keeps a socket on one transmit queue
// of a NIC; a request/response exchange then runs on its requester's CPU,
// and a stream where the kernel's VXLAN would run it, on its sender's CPU
// (moving streams to the next CPU's queue at their first bulk frame split
// a single stream over two CPUs: 5.17 / 4.77 Gbit/s at 1683 / 1825 engine
// ns per KB, against 5.67 / 5.36 at 1192 / 1307 kept where they began).
// Frames without a flow hash, and everything but TCP (ICMP, UDP, ARP), go
// by CPU.
//
// Loading the program and its flow map needs CAP_BPF (the agent runs as
// root); without it the TAPs' own flow hash picks their queues, which
// works, only without the locality.
class CpuSteering {
 public:
  static constexpr uint32_t kFlows = 16384;  // LRU: forgotten flows start over on their CPU
  explicit CpuSteering(size_t queues) {
    bpf_attr m{};
    m.map_type = BPF_MAP_TYPE_LRU_HASH;
    m.key_size = 4;    // the frame's flow hash
    m.value_size = 4;  // its queue
    m.max_entries = kFlows;
    mapFd_ = int(syscall(SYS_bpf, BPF_MAP_CREATE, &m, sizeof m));
    if (mapFd_ < 0) {
      error_ = errnoText("bpf(BPF_MAP_CREATE) of the TAP flow map (needs CAP_BPF or root)");
      return;
    }
    std::vector<bpf_insn> program = tapProgram(uint32_t(queues));
    static const char license[] = "GPL";
    bpf_attr p{};
    p.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    p.insns = uint64_t(uintptr_t(program.data()));
    p.insn_cnt = uint32_t(program.size());
    p.license = uint64_t(uintptr_t(license));
    tapProgFd_ = int(syscall(SYS_bpf, BPF_PROG_LOAD, &p, sizeof p));
    if (tapProgFd_ < 0) error_ = errnoText("bpf(BPF_PROG_LOAD) of the TAP steering program (needs CAP_BPF or root)");
  }
  ~CpuSteering() {
    for (int fd : {tapProgFd_, mapFd_})
      if (fd >= 0) ::close(fd);
  }
  CpuSteering(const CpuSteering&) = delete;
  CpuSteering& operator=(const CpuSteering&) = delete;
  // A TAP that cannot take the program still works, its queues picked by flow hash.
  void attachTap(int fd) {
    int prog = tapProgFd_;
    if (prog < 0) return;
    if (ioctl(fd, TUNSETSTEERINGEBPF, &prog) != 0 && error_.empty())
      error_ = errnoText("ioctl(TUNSETSTEERINGEBPF) on a TAP (needs Linux >= 4.16)");
  }
  // On any socket of the group; it applies to the whole group.
  void attachGroup(int fd) {
    sock_filter code[] = {
        {BPF_LD | BPF_W | BPF_ABS, 0, 0, uint32_t(SKF_AD_OFF + SKF_AD_CPU)},  // A = this CPU
        {BPF_RET | BPF_A, 0, 0, 0},
    };
    sock_fprog prog{uint16_t(sizeof code / sizeof code[0]), code};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) != 0 && error_.empty())
      error_ = errnoText("setsockopt(SO_ATTACH_REUSEPORT_CBPF) on the VXLAN sockets");
  }
  // Why some packets are not steered by CPU; empty if all are. Written under
  // the engine's control mutex (or before the packet threads start).
  const std::string& error() const { return error_; }

 private:
  // The program above, in eBPF (r1 = the frame's __sk_buff; r6-r9 survive calls).
  std::vector<bpf_insn> tapProgram(uint32_t queues) const {
    std::vector<bpf_insn> code;
    struct Fixup {
      size_t at;
      int label;
    };
    std::vector<Fixup> fixups;
    enum { kByCpu, kV4, kCheck, kNew, kLabels };
    size_t labels[kLabels] = {};
    auto op = [&](uint8_t c, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
      bpf_insn i{};
      i.code = c;
      i.dst_reg = dst & 0xf;
      i.src_reg = src & 0xf;
      i.off = off;
      i.imm = imm;
      code.push_back(i);
    };
    auto jump = [&](uint8_t c, uint8_t dst, int32_t imm, int label) {
      fixups.push_back({code.size(), label});
      op(BPF_JMP | c, dst, 0, 0, imm);
    };
    auto bind = [&](int label) { labels[label] = code.size(); };
    auto loadMap = [&](uint8_t dst) {
      op(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, mapFd_);
      op(0, 0, 0, 0, 0);
    };
    const int16_t hashOff = offsetof(__sk_buff, hash);
    op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_1, 0, 0);           // r6 = skb
    op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_smp_processor_id);
    op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_8, BPF_REG_0, 0, 0);           // r8 = this CPU
    op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_7, BPF_REG_6, hashOff, 0);       // r7 = flow hash
    jump(BPF_JEQ | BPF_K, BPF_REG_7, 0, kByCpu);
    op(BPF_LD | BPF_ABS | BPF_H, 0, 0, 0, 12);                             // r0 = EtherType
    jump(BPF_JEQ | BPF_K, BPF_REG_0, 0x0800, kV4);
    jump(BPF_JNE | BPF_K, BPF_REG_0, 0x86dd, kByCpu);
    op(BPF_LD | BPF_ABS | BPF_B, 0, 0, 0, 14 + 6);                         // IPv6 next header
    jump(BPF_JA, 0, 0, kCheck);
    bind(kV4);
    op(BPF_LD | BPF_ABS | BPF_B, 0, 0, 0, 14 + 9);                         // IPv4 protocol
    bind(kCheck);
    jump(BPF_JNE | BPF_K, BPF_REG_0, 6, kByCpu);                           // not TCP
    op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_7, -4, 0);           // key = hash
    loadMap(BPF_REG_1);
    op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0);
    op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -4);
    op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem);
    jump(BPF_JEQ | BPF_K, BPF_REG_0, 0, kNew);
    op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_0, BPF_REG_0, 0, 0);             // known flow: its queue
    op(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    bind(kNew);                                                            // first frame: this CPU
    op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_8, 0, 0);
    op(BPF_ALU64 | BPF_MOD | BPF_K, BPF_REG_3, 0, 0, int32_t(queues));
    op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_3, -8, 0);
    loadMap(BPF_REG_1);
    op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0);
    op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -4);
    op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_10, 0, 0);
    op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_3, 0, 0, -8);
    op(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_4, 0, 0, BPF_ANY);
    op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_update_elem);
    bind(kByCpu);
    op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_0, BPF_REG_8, 0, 0);
    op(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
    for (const Fixup& f : fixups) code[f.at].off = int16_t(labels[f.label] - f.at - 1);
    return code;
  }
  int mapFd_ = -1, tapProgFd_ = -1;
  std::string error_;
};

// One queue: its packet thread, its socket of the group, its epoll set (the
// socket, its queue of every TAP, the stop event).
struct Worker {
  size_t queue = 0;
  int cpu = -1;  // the CPU the thread is bound to; -1 = any the process may use
  int udpFd = -1;
  int epollFd = -1;
  std::thread thread;
  std::mutex roundMutex;  // held by the thread while it uses a map snapshot
  std::atomic<uint64_t> rounds{0}, wakeups{0}, naps{0}, busyPolls{0}, busyPollHits{0}, busyPollWindowNs{0};
  ~Worker() {
    for (int fd : {udpFd, epollFd})
      if (fd >= 0) ::close(fd);
  }
};

namespace {

// epoll tags: a TAP's tag is its VNI (1..2^24-1).
constexpr uint64_t kUdpTag = uint64_t(1) << 32;
constexpr uint64_t kStopTag = uint64_t(2) << 32;
constexpr int kMaxEvents = 64;

// A round after a blocking wait this long begins sparse traffic.
constexpr uint64_t kSparseGapNs = 1000000;

}  // namespace

Network::~Network() {
  for (int fd : tapFds) ::close(fd);
}

// ---------------------------------------------------------------------------
// TX: datagrams to send, gathered into one sendmmsg. Payload iovecs point into
// the TAP read buffers, which stay untouched until flush().
class TxBatch {
 public:
  static constexpr size_t kMaxMessages = 64;
  static constexpr size_t kMaxIov = 1024;
  static constexpr size_t kMaxHeaders = 512;
  static constexpr size_t kHeaderSlotBytes = kVxlanHeaderBytes + kEthHeaderBytes + 60 + 60;

  // Each message leaves from sourceFds[flow hash % size].
  TxBatch(const std::vector<int>& sourceFds, uint16_t port) : sourceFds_(sourceFds), port_(port) {}

  // Room for a message with `iovs` iovecs and `headers` header slots?
  void reserve(size_t iovs, size_t headers) {
    if (messages_ + 1 > kMaxMessages || iovCount_ + iovs > kMaxIov || headerCount_ + headers > kMaxHeaders) flush();
  }
  uint8_t* header() { return headers_[headerCount_++]; }
  void beginMessage(Network* net, in_addr_t vtep, uint32_t flowHash) {
    fds_[messages_] = sourceFds_[flowHash % sourceFds_.size()];
    mmsghdr& m = msgs_[messages_];
    std::memset(&m, 0, sizeof m);
    sockaddr_in& a = addrs_[messages_];
    std::memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port_);
    a.sin_addr.s_addr = vtep;
    m.msg_hdr.msg_name = &a;
    m.msg_hdr.msg_namelen = sizeof a;
    m.msg_hdr.msg_iov = &iov_[iovCount_];
    nets_[messages_] = net;
    packets_[messages_] = 0;
    bytes_[messages_] = 0;
  }
  void addIov(const void* p, size_t n) {
    iov_[iovCount_].iov_base = const_cast<void*>(p);
    iov_[iovCount_].iov_len = n;
    iovCount_++;
    msgs_[messages_].msg_hdr.msg_iovlen++;
  }
  void countInner(size_t innerBytes) {
    packets_[messages_]++;
    bytes_[messages_] += innerBytes;
  }
  void endMessage(uint16_t gsoSegmentBytes) {
    mmsghdr& m = msgs_[messages_];
    if (gsoSegmentBytes != 0) {
      char* buf = control_[messages_];
      m.msg_hdr.msg_control = buf;
      m.msg_hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
      cmsghdr* c = CMSG_FIRSTHDR(&m.msg_hdr);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      std::memcpy(CMSG_DATA(c), &gsoSegmentBytes, sizeof gsoSegmentBytes);
    }
    messages_++;
  }
  void flush() {
    size_t done = 0;
    while (done < messages_) {
      // One sendmmsg per run of messages from the same socket (a stream's
      // are all one run).
      size_t run = 1;
      while (done + run < messages_ && fds_[done + run] == fds_[done]) run++;
      int r = sendmmsg(fds_[done], &msgs_[done], unsigned(run), 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        // The first unsent message failed: count it and go on with the rest.
        nets_[done]->counters.drop(kDropSendError, packets_[done]);
        done++;
        continue;
      }
      for (int i = 0; i < r; i++) {
        Counters& c = nets_[done + i]->counters;
        c.txPackets.fetch_add(packets_[done + i], std::memory_order_relaxed);
        c.txBytes.fetch_add(bytes_[done + i], std::memory_order_relaxed);
      }
      done += size_t(r);
    }
    messages_ = iovCount_ = headerCount_ = 0;
  }

 private:
  const std::vector<int>& sourceFds_;
  uint16_t port_;
  size_t messages_ = 0, iovCount_ = 0, headerCount_ = 0;
  int fds_[kMaxMessages];
  mmsghdr msgs_[kMaxMessages];
  sockaddr_in addrs_[kMaxMessages];
  alignas(cmsghdr) char control_[kMaxMessages][CMSG_SPACE(sizeof(uint16_t))];
  Network* nets_[kMaxMessages];
  uint64_t packets_[kMaxMessages];
  uint64_t bytes_[kMaxMessages];
  iovec iov_[kMaxIov];
  uint8_t headers_[kMaxHeaders][kHeaderSlotBytes];
};

// ---------------------------------------------------------------------------
// RX: consecutive in-order TCP segments of one flow become one TAP write with
// a GSO virtio-net header, so the kernel handles one 64 KB frame instead of
// forty 1.4 KB ones. Payload iovecs point into the receive buffers, valid
// until the batch ends (flush() is called before they are reused). Writes go
// to the TAPs' queue `queue` (any queue reaches the bridge; the worker's own
// is the one it reads answers from).
class Coalescer {
 public:
  Coalescer(bool enabled, size_t queue) : enabled_(enabled), queue_(queue) { touched_.reserve(kMaxTouched); }

  // Networks written to since clearTouched().
  const std::vector<Network*>& touched() const { return touched_; }
  void clearTouched() { touched_.clear(); }

  void add(Network* net, const uint8_t* frame, size_t bytes) {
    TcpFrame t;
    if (!enabled_ || !coalescable(frame, bytes, &t)) {
      flush();
      writeSingle(net, frame, bytes, 0);
      return;
    }
    if (segments_ > 0 && net == net_ && canAppend(frame, t)) {
      append(frame, t);
    } else {
      flush();
      start(net, frame, t);
    }
    if (segments_ >= kMaxCoalescedSegments) flush();
  }

  void flush() {
    if (segments_ == 0) return;
    VnetHeader v{};
    uint8_t* ip = header_ + tcp_.ipOffset;
    uint8_t* tcpHeader = header_ + tcp_.tcpOffset;
    if (segments_ == 1) {
      v.flags = kVnetFlagDataValid;  // we verified both checksums
    } else {
      uint32_t l4Bytes = uint32_t(tcp_.tcpHeaderBytes + payloadBytes_);
      store16(ip + 2, uint16_t(tcp_.ipHeaderBytes + l4Bytes));
      ip[10] = ip[11] = 0;
      checksumStore(ip + 10, checksumAdd(ip, tcp_.ipHeaderBytes, 0));
      if (sawPush_) tcpHeader[13] |= kTcpFlagPsh;
      // Partial checksum: the pseudo-header sum, completed by whoever
      // segments or delivers the frame (VIRTIO_NET_HDR_F_NEEDS_CSUM).
      uint16_t partial = checksumFold(pseudoHeaderSum(ip, false, kIpProtoTcp, l4Bytes));
      std::memcpy(tcpHeader + 16, &partial, 2);
      v.flags = kVnetFlagNeedsCsum;
      v.gsoType = kVnetGsoTcpV4;
      v.hdrLen = uint16_t(tcp_.headerBytes);
      v.gsoSize = uint16_t(mss_);
      v.csumStart = uint16_t(tcp_.tcpOffset);
      v.csumOffset = 16;
      net_->counters.rxCoalescedFrames.fetch_add(1, std::memory_order_relaxed);
    }
    iov_[0] = {&v, sizeof v};
    iov_[1] = {header_, tcp_.headerBytes};
    write(net_, iov_, 2 + segments_, tcp_.headerBytes + payloadBytes_, segments_);
    segments_ = 0;
    net_ = nullptr;
  }

  // Frames that are not TCP data (ARP, ICMP, handshakes) go through as they
  // are; the kernel verifies their checksums itself.
  void writeSingle(Network* net, const uint8_t* frame, size_t bytes, uint8_t flags) {
    VnetHeader v{};
    v.flags = flags;
    iovec iov[2] = {{&v, sizeof v}, {const_cast<uint8_t*>(frame), bytes}};
    write(net, iov, 2, bytes, 1);
  }

 private:
  void write(Network* net, iovec* iov, size_t iovCount, size_t innerBytes, size_t innerPackets) {
    ssize_t r;
    do {
      r = writev(net->tapFds[queue_], iov, int(iovCount));
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
      net->counters.drop(kDropTapWriteError, innerPackets);
      return;
    }
    net->counters.rxPackets.fetch_add(innerPackets, std::memory_order_relaxed);
    net->counters.rxBytes.fetch_add(innerBytes, std::memory_order_relaxed);
    for (Network* t : touched_)
      if (t == net) return;
    if (touched_.size() < kMaxTouched) touched_.push_back(net);
  }

  static bool coalescable(const uint8_t* f, size_t n, TcpFrame* t) {
    if (!parseTcpFrame(f, n, true, t) || t->ipv6 || t->ipHeaderBytes != 20 || t->payloadBytes == 0) return false;
    uint8_t flags = f[t->tcpOffset + 13];
    if ((flags & ~(kTcpFlagAck | kTcpFlagPsh)) != 0 || !(flags & kTcpFlagAck)) return false;
    const uint8_t* ip = f + t->ipOffset;
    if (!checksumVerifies(checksumAdd(ip, 20, 0))) return false;
    uint64_t sum = pseudoHeaderSum(ip, false, kIpProtoTcp, uint32_t(t->tcpHeaderBytes + t->payloadBytes));
    // A corrupted segment must not be hidden behind a checksum we recompute.
    return checksumVerifies(checksumAdd(f + t->tcpOffset, t->tcpHeaderBytes + t->payloadBytes, sum));
  }

  bool canAppend(const uint8_t* f, const TcpFrame& t) const {
    if (closed_ || t.tcpHeaderBytes != tcp_.tcpHeaderBytes || t.payloadBytes > mss_) return false;
    if (tcp_.ipHeaderBytes + tcp_.tcpHeaderBytes + payloadBytes_ + t.payloadBytes > kMaxCoalescedIpBytes) return false;
    const uint8_t* ip = f + t.ipOffset;
    const uint8_t* ip0 = header_ + tcp_.ipOffset;
    const uint8_t* th = f + t.tcpOffset;
    const uint8_t* th0 = header_ + tcp_.tcpOffset;
    if (std::memcmp(f, header_, kEthHeaderBytes) != 0) return false;
    if (ip[1] != ip0[1] || ip[8] != ip0[8] || std::memcmp(ip + 12, ip0 + 12, 8) != 0) return false;
    if (std::memcmp(th, th0, 4) != 0 || std::memcmp(th + 8, th0 + 8, 4) != 0) return false;  // ports, ack
    if (((th[13] ^ th0[13]) & ~kTcpFlagPsh) != 0) return false;
    if (std::memcmp(th + 20, th0 + 20, t.tcpHeaderBytes - 20) != 0) return false;  // options (timestamps)
    return load32(th + 4) == nextSeq_;
  }

  void start(Network* net, const uint8_t* f, const TcpFrame& t) {
    net_ = net;
    tcp_ = t;
    std::memcpy(header_, f, t.headerBytes);
    mss_ = t.payloadBytes;
    payloadBytes_ = 0;
    segments_ = 0;
    sawPush_ = false;
    closed_ = false;
    nextSeq_ = load32(f + t.tcpOffset + 4);
    append(f, t);
  }

  void append(const uint8_t* f, const TcpFrame& t) {
    const uint8_t* th = f + t.tcpOffset;
    iov_[2 + segments_] = {const_cast<uint8_t*>(f + t.headerBytes), t.payloadBytes};
    segments_++;
    payloadBytes_ += t.payloadBytes;
    nextSeq_ += uint32_t(t.payloadBytes);
    std::memcpy(header_ + tcp_.tcpOffset + 14, th + 14, 2);  // latest window
    if (th[13] & kTcpFlagPsh) sawPush_ = true;
    // A short or pushed segment ends a run, as it does in Linux GRO.
    if (t.payloadBytes < mss_ || (th[13] & kTcpFlagPsh)) closed_ = true;
  }

  static constexpr size_t kMaxTouched = 16;
  bool enabled_;
  size_t queue_;
  std::vector<Network*> touched_;
  Network* net_ = nullptr;
  TcpFrame tcp_{};
  uint8_t header_[kEthHeaderBytes + 60 + 60];
  size_t mss_ = 0, payloadBytes_ = 0, segments_ = 0;
  uint32_t nextSeq_ = 0;
  bool sawPush_ = false, closed_ = false;
  iovec iov_[2 + kMaxCoalescedSegments];
};

// ---------------------------------------------------------------------------

namespace {

// A UDP socket that sends VXLAN datagrams: a large send buffer (FORCE
// exceeds net.core.wmem_max, we run as root; the plain option is the
// fallback without CAP_NET_ADMIN) and, like the kernel's VXLAN device (df
// unset), datagrams the underlay may fragment.
int openUdpSender() {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(errnoText("socket(AF_INET, SOCK_DGRAM)"));
  int size = kSocketBufferBytes;
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  int pmtu = IP_PMTUDISC_DONT;
  setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
  return fd;
}

// A socket of the group on the VTEP address, with UDP GRO and large buffers.
int openVxlanSocket(const EngineOptions& options, bool reusePort) {
  int fd = openUdpSender();
  int size = kSocketBufferBytes;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  int one = 1;
  if (options.offloads && setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one) != 0) {
    ::close(fd);
    throw std::runtime_error(errnoText("setsockopt(UDP_GRO) (needs Linux >= 5.0; pass offloads: false)"));
  }
  if (reusePort && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    ::close(fd);
    throw std::runtime_error(errnoText("setsockopt(SO_REUSEPORT) (needs Linux >= 3.9; pass queues: 1)"));
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(options.port);
  a.sin_addr.s_addr = options.vtep;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &options.vtep, ip, sizeof ip);
    std::string msg = errnoText(("cannot bind the VXLAN socket to " + std::string(ip) + ":" +
                                 std::to_string(options.port) +
                                 " (is the VTEP address configured on this host, and no kernel vxlan device or "
                                 "other agent using the port?)")
                                    .c_str());
    ::close(fd);
    throw std::runtime_error(msg);
  }
  return fd;
}

// A socket to send from: the VTEP address, a port the kernel picks from
// its ephemeral range. As the kernel's VXLAN does (its source port is a
// hash of the inner flow, RFC 7348 5.), each flow leaves from one of
// several ports, so underlay routers (ECMP) and the receiving NIC (RSS)
// spread flows instead of carrying all of this host's traffic on one
// path and one receive queue. Datagrams still go to the peer's port 4789;
// nothing is read here.
int openSourceSocket(const EngineOptions& options) {
  int fd = openUdpSender();
  int least = 1;  // never read: whatever strays here may only take the minimum
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &least, sizeof least);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = options.vtep;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    std::string msg = errnoText("cannot bind a VXLAN source socket to the VTEP address");
    ::close(fd);
    throw std::runtime_error(msg);
  }
  return fd;
}

}  // namespace

Engine::Engine(const EngineOptions& options) : options_(options), port_(options.port) {
  networks_ = std::make_shared<NetworkMap>();
  // One queue per CPU id, so the CPU a steering program returns is the
  // queue's index.
  size_t cpus = size_t(std::max(1, get_nprocs_conf()));
  queues_ = std::min<size_t>(options_.queues == 0 ? cpus : options_.queues, kMaxQueues);
  if (queues_ > 1) steering_ = std::make_unique<CpuSteering>(queues_);
  for (size_t q = 0; q < queues_; q++) {
    workers_.push_back(std::make_unique<Worker>());
    workers_.back()->queue = q;
  }
  runInNetns(options_.netnsPath, [&] {
    bool group = queues_ > 1;
    // A reuse-port group would let a second agent's group (same user) join
    // ours silently instead of failing: a plain socket first asks whether
    // the port is taken.
    if (group) ::close(openVxlanSocket(options_, false));
    for (auto& w : workers_) w->udpFd = openVxlanSocket(options_, group);
    for (size_t i = 0; i < kSourcePorts; i++) sourceFds_.fds.push_back(openSourceSocket(options_));
    if (group) steering_->attachGroup(workers_[0]->udpFd);
  });
  updateStreamNap();
  stopFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stopFd_ < 0) throw std::runtime_error(errnoText("eventfd"));
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) CPU_ZERO(&allowed);
  for (auto& w : workers_) {
    w->epollFd = epoll_create1(EPOLL_CLOEXEC);
    epoll_event udp{}, stop{};
    udp.events = stop.events = EPOLLIN;
    udp.data.u64 = kUdpTag;
    stop.data.u64 = kStopTag;
    if (w->epollFd < 0 || epoll_ctl(w->epollFd, EPOLL_CTL_ADD, w->udpFd, &udp) != 0 ||
        epoll_ctl(w->epollFd, EPOLL_CTL_ADD, stopFd_, &stop) != 0) {
      std::string msg = errnoText("epoll");
      ::close(stopFd_);
      throw std::runtime_error(msg);
    }
    // Bound to its CPU where the process may run there; a queue of a CPU it
    // may not use (a cpuset) is served from anywhere.
    if (queues_ > 1 && w->queue < CPU_SETSIZE && CPU_ISSET(w->queue, &allowed)) w->cpu = int(w->queue);
  }
  for (auto& w : workers_) {
    liveThreads_.fetch_add(1);
    Worker* worker = w.get();
    worker->thread = std::thread([this, worker] { loop(*worker); });
  }
}

Engine::~Engine() { close(); }

void Engine::OwnedFds::closeAll() {
  for (int fd : fds) ::close(fd);
  fds.clear();
}

std::shared_ptr<const NetworkMap> Engine::networks() const { return std::atomic_load(&networks_); }

void Engine::addNetwork(uint32_t vni, const std::string& tapName) {
  std::lock_guard<std::mutex> lock(controlMutex_);
  if (closed_) throw std::runtime_error("the engine is closed");
  if (vni == 0 || vni > 0xffffff) throw std::runtime_error("VNI " + std::to_string(vni) + " is outside 1..16777215");
  if (tapName.empty() || tapName.size() >= IFNAMSIZ)
    throw std::runtime_error("TAP name \"" + tapName + "\" must have 1.." + std::to_string(IFNAMSIZ - 1) + " characters");
  auto current = networks();
  if (current->count(vni)) {
    if (current->at(vni)->tapName == tapName) return;  // idempotent
    throw std::runtime_error("VNI " + std::to_string(vni) + " already has TAP " + current->at(vni)->tapName);
  }
  auto net = std::make_shared<Network>();
  net->vni = vni;
  net->tapName = tapName;
  net->peers = std::make_shared<PeerTable>();
  net->tapFailed.assign(queues_, 0);
  runInNetns(options_.netnsPath, [&] {
    // Each open + TUNSETIFF of a multi-queue TAP attaches one more queue.
    for (size_t q = 0; q < queues_; q++) {
      int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0) throw std::runtime_error(errnoText("cannot open /dev/net/tun (is the tun module loaded?)"));
      net->tapFds.push_back(fd);  // closed by ~Network if a later step fails
      ifreq ifr{};
      ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (queues_ > 1 ? IFF_MULTI_QUEUE : 0);
      std::strncpy(ifr.ifr_name, tapName.c_str(), IFNAMSIZ - 1);
      if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
        std::string why = q == 0 && queues_ > 1 && errno == EINVAL
                              ? " (a single-queue device of that name exists? delete it, or pass queues: 1)"
                              : "";
        throw std::runtime_error(errnoText(("cannot create TAP device " + tapName + why).c_str()));
      }
      int hdrBytes = sizeof(VnetHeader);
      ioctl(fd, TUNSETVNETHDRSZ, &hdrBytes);
      // With these the kernel hands us whole TCP super-frames (up to 64 KB) with
      // partial checksums; we segment and checksum them on the way out.
      unsigned offloads = options_.offloads ? (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) : 0;
      if (ioctl(fd, TUNSETOFFLOAD, offloads) != 0) throw std::runtime_error(errnoText("TUNSETOFFLOAD"));
    }
    if (queues_ > 1) steering_->attachTap(net->tapFds[0]);
  });
  updateStreamNap();
  auto next = std::make_shared<NetworkMap>(*current);
  (*next)[vni] = net;
  std::atomic_store(&networks_, std::shared_ptr<const NetworkMap>(next));
  // Published first: a packet thread looks the VNI up when its queue turns readable.
  for (auto& w : workers_) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = vni;
    if (epoll_ctl(w->epollFd, EPOLL_CTL_ADD, net->tapFds[w->queue], &ev) != 0) {
      std::string msg = errnoText(("cannot poll TAP device " + tapName).c_str());
      removeLocked(vni);
      throw std::runtime_error(msg);
    }
  }
}

void Engine::removeNetwork(uint32_t vni) {
  std::lock_guard<std::mutex> lock(controlMutex_);
  removeLocked(vni);
}

void Engine::removeLocked(uint32_t vni) {
  auto current = networks();
  auto it = current->find(vni);
  if (it == current->end()) return;
  std::shared_ptr<Network> net = it->second;
  auto next = std::make_shared<NetworkMap>(*current);
  next->erase(vni);
  std::atomic_store(&networks_, std::shared_ptr<const NetworkMap>(next));
  current.reset();
  for (auto& w : workers_) epoll_ctl(w->epollFd, EPOLL_CTL_DEL, net->tapFds[w->queue], nullptr);  // ENOENT if it failed earlier
  // Wait out rounds that may still use the old map, so the TAP is closed
  // (and the device gone) when this returns.
  for (auto& w : workers_) std::lock_guard<std::mutex> barrier(w->roundMutex);
  net.reset();
}

void Engine::setPeers(uint32_t vni, std::shared_ptr<const PeerTable> table) {
  auto current = networks();
  auto it = current->find(vni);
  if (it == current->end()) throw std::runtime_error("no network with VNI " + std::to_string(vni) + " on this engine");
  std::atomic_store(&it->second->peers, table);
}

void Engine::close() {
  std::lock_guard<std::mutex> lock(controlMutex_);
  if (closed_) return;
  closed_ = true;
  std::vector<uint32_t> vnis;
  for (auto& [vni, net] : *networks()) vnis.push_back(vni);
  for (uint32_t vni : vnis) removeLocked(vni);
  if (stopFd_ >= 0) signalStop(stopFd_);  // never read: every thread's epoll keeps reporting it
  for (auto& w : workers_)
    if (w->thread.joinable()) w->thread.join();
  workers_.clear();  // closes the sockets and epoll sets
  sourceFds_.closeAll();
  if (stopFd_ >= 0) ::close(stopFd_);
  stopFd_ = -1;
}

static CountersSnapshot snapshot(const Counters& c) {
  CountersSnapshot s{};
  s.txPackets = c.txPackets.load();
  s.txBytes = c.txBytes.load();
  s.rxPackets = c.rxPackets.load();
  s.rxBytes = c.rxBytes.load();
  s.arpReplies = c.arpReplies.load();
  s.flooded = c.flooded.load();
  s.txSuperFrames = c.txSuperFrames.load();
  s.rxCoalescedFrames = c.rxCoalescedFrames.load();
  for (int i = 0; i < kDropCount; i++) s.drops[i] = c.drops[i].load();
  return s;
}

std::vector<std::pair<uint32_t, CountersSnapshot>> Engine::networkCounters() const {
  std::vector<std::pair<uint32_t, CountersSnapshot>> out;
  for (auto& [vni, net] : *networks()) out.emplace_back(vni, snapshot(net->counters));
  return out;
}

CountersSnapshot Engine::hostCounters() const { return snapshot(host_); }

bool Engine::steersByCpuLocked() const { return queues_ > 1 && steering_->error().empty(); }

void Engine::updateStreamNap() {
  uint32_t us;
  if (options_.streamNapUs >= 0)
    us = uint32_t(options_.streamNapUs);
  else
    us = steersByCpuLocked() ? 0 : kAutoStreamNapUs;
  streamNapUs_.store(us, std::memory_order_relaxed);
}

std::string Engine::steeringError() const {
  std::lock_guard<std::mutex> lock(controlMutex_);
  return queues_ > 1 ? steering_->error() : std::string();
}

ThreadStats Engine::threadStats() const {
  std::lock_guard<std::mutex> lock(controlMutex_);
  ThreadStats t{};
  t.threads = uint32_t(workers_.size());
  t.steersByCpu = steersByCpuLocked();
  t.streamNapUs = streamNapUs_.load(std::memory_order_relaxed);
  for (auto& w : workers_) {
    t.wakeups += w->wakeups.load();
    t.busyPollHits += w->busyPollHits.load();
    t.busyPolls += w->busyPolls.load();
    t.naps += w->naps.load();
    t.busyPollWindowNs = std::max<uint64_t>(t.busyPollWindowNs, w->busyPollWindowNs.load());
  }
  return t;
}

std::vector<QueueStats> Engine::queueStats() const {
  std::lock_guard<std::mutex> lock(controlMutex_);
  std::vector<QueueStats> out;
  for (auto& w : workers_) out.push_back({w->cpu, w->rounds.load(), w->wakeups.load()});
  return out;
}

// ---------------------------------------------------------------------------
// TAP -> UDP

// Frame buffers and a send batch: one per thread that reads TAPs.
struct TapScratch {
  TapScratch(const std::vector<int>& sourceFds, uint16_t port)
      : frames(new uint8_t[kTapReadBatch * kMaxFrameBytes]), batch(std::make_unique<TxBatch>(sourceFds, port)) {}
  std::unique_ptr<uint8_t[]> frames;
  std::unique_ptr<TxBatch> batch;
  size_t lengths[kTapReadBatch];
};

size_t Engine::drainTap(Worker& w, Network* net, TapScratch& scratch, bool lone, size_t* bytes) {
  size_t got = 0;
  int fd = net->tapFds[w.queue];
  while (got < kTapReadBatch) {
    ssize_t r = read(fd, &scratch.frames[got * kMaxFrameBytes], kMaxFrameBytes);
    if (r < 0) {
      if (errno == EINTR) continue;
      // EAGAIN: nothing more. Anything else (EBADFD: the device was deleted)
      // is counted, and the TAP leaves the poll set so the thread does not
      // spin on it; the data plane's reconcile recreates it.
      if (errno != EAGAIN) {
        net->counters.drop(kDropTapReadError);
        net->tapFailed[w.queue] = 1;
        epoll_ctl(w.epollFd, EPOLL_CTL_DEL, fd, nullptr);
      }
      break;
    }
    scratch.lengths[got++] = size_t(r);
    *bytes += size_t(r);
    // A lone request or answer: the read that would only say EAGAIN is
    // skipped; anything still queued is reported by the next (level-triggered) epoll_wait.
    if (lone && size_t(r) <= kLoneFrameBytes) break;
  }
  if (got > 0) {
    auto peers = std::atomic_load(&net->peers);
    for (size_t i = 0; i < got; i++)
      handleTapFrame(net, w.queue, *peers, &scratch.frames[i * kMaxFrameBytes], scratch.lengths[i], *scratch.batch);
    scratch.batch->flush();
  }
  return got;
}

void Engine::handleTapFrame(Network* net, size_t queue, const PeerTable& peers, uint8_t* buf, size_t bytes,
                            TxBatch& batch) {
  Counters& c = net->counters;
  if (bytes < sizeof(VnetHeader) + kEthHeaderBytes) {
    c.drop(kDropShortFrame);
    return;
  }
  VnetHeader vnet;
  std::memcpy(&vnet, buf, sizeof vnet);
  uint8_t* frame = buf + sizeof vnet;
  size_t frameBytes = bytes - sizeof vnet;

  const in_addr_t* targets;
  size_t targetCount;
  in_addr_t unicastTarget;
  if (isMulticastMac(frame)) {
    uint32_t targetIp, senderIp;
    if (parseArpRequest(frame, frameBytes, &targetIp, &senderIp)) {
      // Proxy ARP, as the kernel's vxlan "proxy" mode: answer from the peer
      // table, never tunnel the request.
      auto it = peers.macByIp.find(targetIp);
      if (it == peers.macByIp.end()) {
        c.drop(kDropArpUnanswered);
        return;
      }
      uint8_t mac[6];
      keyToMac(it->second, mac);
      uint8_t reply[64];
      size_t n = buildArpReply(frame, mac, reply);
      VnetHeader v{};
      iovec iov[2] = {{&v, sizeof v}, {reply, n}};
      if (writev(net->tapFds[queue], iov, 2) < 0)
        c.drop(kDropTapWriteError);
      else
        c.arpReplies.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (load16(frame + 12) == kEtherTypeArp) {
      c.drop(kDropArpUnanswered);  // replies and announcements stay local
      return;
    }
    // Other broadcast/multicast (IPv6 neighbour discovery, DHCP, mDNS):
    // head-end replication to every host of the network.
    if (peers.vteps.empty()) {
      c.drop(kDropNoVtep);
      return;
    }
    targets = peers.vteps.data();
    targetCount = peers.vteps.size();
    c.flooded.fetch_add(1, std::memory_order_relaxed);
  } else {
    auto it = peers.vtepByMac.find(macToKey(frame));
    if (it == peers.vtepByMac.end()) {
      c.drop(kDropUnknownDestination);
      return;
    }
    unicastTarget = it->second;
    targets = &unicastTarget;
    targetCount = 1;
  }

  const uint32_t flow = flowHash(frame, frameBytes);  // picks the source port
  if (vnet.gsoType == kVnetGsoNone) {
    if ((vnet.flags & kVnetFlagNeedsCsum) &&
        !completePartialChecksum(frame, frameBytes, vnet.csumStart, vnet.csumOffset)) {
      c.drop(kDropBadOffloadHeader);
      return;
    }
    for (size_t t = 0; t < targetCount; t++) {
      batch.reserve(2, 1);
      batch.beginMessage(net, targets[t], flow);
      uint8_t* h = batch.header();
      writeVxlanHeader(h, net->vni);
      batch.addIov(h, kVxlanHeaderBytes);
      batch.addIov(frame, frameBytes);
      batch.countInner(frameBytes);
      batch.endMessage(0);
    }
    return;
  }

  TsoPlan plan;
  if (!planTso(frame, frameBytes, vnet, &plan)) {
    c.drop(kDropBadOffloadHeader);
    return;
  }
  // Each UDP GSO message: up to 64 datagrams of VXLAN + one MSS-sized packet,
  // all of the same size but the last, within one 64 KB IPv4 datagram.
  size_t segmentBytes = kVxlanHeaderBytes + plan.tcp.headerBytes + plan.mss;
  if (segmentBytes > 0xffff) {
    c.drop(kDropBadOffloadHeader);
    return;
  }
  if (plan.count > 1) c.txSuperFrames.fetch_add(1, std::memory_order_relaxed);
  size_t perMessage = std::min(kMaxUdpGsoSegments, kMaxUdpPayloadBytes / segmentBytes);
  if (perMessage == 0) perMessage = 1;
  for (size_t t = 0; t < targetCount; t++) {
    for (size_t first = 0; first < plan.count; first += perMessage) {
      size_t n = std::min(perMessage, plan.count - first);
      batch.reserve(2 * n, n);
      batch.beginMessage(net, targets[t], flow);
      for (size_t i = first; i < first + n; i++) {
        uint8_t* h = batch.header();
        writeVxlanHeader(h, net->vni);
        buildTsoSegmentHeader(frame, plan, i, h + kVxlanHeaderBytes);
        size_t payload = plan.payloadBytes(i);
        batch.addIov(h, kVxlanHeaderBytes + plan.tcp.headerBytes);
        if (payload > 0) batch.addIov(frame + plan.tcp.headerBytes + i * plan.mss, payload);
        batch.countInner(plan.tcp.headerBytes + payload);
      }
      batch.endMessage(n > 1 ? uint16_t(segmentBytes) : 0);
    }
  }
}

// ---------------------------------------------------------------------------
// UDP -> TAP

// Buffers of one packet thread: receive batch, coalescer, TAP frames.
struct RxScratch {
  RxScratch(const Worker& w, const std::vector<int>& sourceFds, bool offloads, uint16_t port)
      : buffers(new uint8_t[kRxMessages * kRxBufferBytes]),  // not zeroed: pages only as traffic needs them
        coalescer(offloads, w.queue),
        tap(sourceFds, port) {}
  std::unique_ptr<uint8_t[]> buffers;
  mmsghdr msgs[kRxMessages];
  iovec iov[kRxMessages];
  alignas(cmsghdr) char control[kRxMessages][CMSG_SPACE(sizeof(int))];
  Coalescer coalescer;
  TapScratch tap;
};

struct RoundResult {
  size_t datagrams = 0;  // received from the underlay
  size_t frames = 0;     // read from TAPs (and sent, answered or dropped)
  size_t bytes = 0;      // of both
};

void Engine::receiveBatch(Worker& w, const NetworkMap& nets, RxScratch& rx, bool lone, RoundResult& result) {
  for (size_t i = 0; i < kRxMessages; i++) {
    rx.iov[i] = {&rx.buffers[i * kRxBufferBytes], kRxBufferBytes};
    std::memset(&rx.msgs[i], 0, sizeof rx.msgs[i]);
    rx.msgs[i].msg_hdr.msg_iov = &rx.iov[i];
    rx.msgs[i].msg_hdr.msg_iovlen = 1;
    rx.msgs[i].msg_hdr.msg_control = rx.control[i];
    rx.msgs[i].msg_hdr.msg_controllen = sizeof rx.control[i];
  }
  int n;
  do {
    n = recvmmsg(w.udpFd, rx.msgs, kRxMessages, MSG_DONTWAIT, nullptr);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return;
  result.datagrams += size_t(n);
  for (int i = 0; i < n; i++) {
    const msghdr& h = rx.msgs[i].msg_hdr;
    result.bytes += rx.msgs[i].msg_len;
    if (h.msg_flags & MSG_TRUNC) {
      host_.drop(kDropTruncatedDatagram);
      continue;
    }
    size_t bytes = rx.msgs[i].msg_len;
    size_t segment = bytes;
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(const_cast<msghdr*>(&h), c)) {
      if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
        int gso;
        std::memcpy(&gso, CMSG_DATA(c), sizeof gso);
        if (gso > 0) segment = size_t(gso);
      }
    }
    const uint8_t* p = &rx.buffers[size_t(i) * kRxBufferBytes];
    for (size_t off = 0; off < bytes; off += segment)
      handleDatagram(nets, p + off, std::min(segment, bytes - off), rx.coalescer);
  }
  rx.coalescer.flush();
  // A frame written to a TAP is usually answered before writev returns (the
  // bridge, the container's stack and its reply all run in that call's
  // softirq): send the answer now, not after another trip through epoll.
  for (Network* net : rx.coalescer.touched()) {
    if (net->tapFailed[w.queue]) continue;
    result.frames += drainTap(w, net, rx.tap, lone && n == 1, &result.bytes);
  }
  rx.coalescer.clearTouched();
}

void Engine::loop(Worker& w) {
  ThreadExit alive{liveThreads_};
  pthread_setname_np(pthread_self(), "weft-vxlan");  // for top -H and the bench's CPU accounting
  if (w.cpu >= 0) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(w.cpu, &one);
    pthread_setaffinity_np(pthread_self(), sizeof one, &one);
  }
  PriorityGovernor governor(options_.priority);
  BusyPoll busyPoll(options_.busyPollUs);
  auto scratch = std::make_unique<RxScratch>(w, sourceFds_.fds, options_.offloads, port_);
  epoll_event events[kMaxEvents];
  uint64_t spinFromNs = 0;  // end of the last round worth spinning after; 0 = the last was not
  uint64_t lastBulkNs = 0;  // end of this thread's last round that moved more than BusyPoll::kMaxRoundBytes
  // Sparse traffic (a request/response exchange that began after >= 1 ms of
  // sleep, every round of it light): each round handles one small packet,
  // and the system calls that would only confirm there is nothing more (a
  // TAP read saying EAGAIN, a non-blocking epoll_wait before the blocking
  // one) are skipped; level-triggered epoll reports anything left over at once.
  bool sparse = false;
  for (;;) {
    uint64_t sleptNs = 0;  // how long this round's blocking wait took; 0 = found by polling
    bool willSpin = spinFromNs != 0 && busyPoll.windowNs() > 0;
    // Level-triggered: whatever a round left unread is reported again. A
    // thread about to spin yields before its first poll, which could not
    // find the answer to what it just sent anyway: the thread that send woke
    // (the peer engine, when hosts share a machine) runs ~2 us sooner.
    int n = sparse || willSpin ? 0 : epoll_wait(w.epollFd, events, kMaxEvents, 0);
    if (n == 0 && willSpin) {
      uint64_t deadline = spinFromNs + busyPoll.windowNs();
      w.busyPolls.fetch_add(1, std::memory_order_relaxed);
      while (n == 0 && nowNs() < deadline) {
        sched_yield();  // to the peer engine's thread if it woke on this CPU (same priority)
        n = epoll_wait(w.epollFd, events, kMaxEvents, 0);
      }
      if (n > 0) w.busyPollHits.fetch_add(1, std::memory_order_relaxed);
    }
    // Interrupt moderation for streams (what a NIC's rx-usecs does), only
    // where packets are not steered by CPU unless asked for: out of work
    // within 1 ms of a bulk round, the thread sleeps streamNapUs on a timer
    // and then takes everything that came meanwhile in one round, instead
    // of blocking in epoll_wait to be woken for every TSO frame or GRO
    // datagram. That pays when a wake-up is an inter-processor interrupt
    // (one queue: 9.7 against 7.5 Gbit/s). Steered by CPU, the waker is on
    // the thread's own CPU, a wake-up is a switch, and the nap's timer
    // interrupt (~50 us of CPU on this VM) costs more: 12.9 against 9.0
    // Gbit/s without naps (measurement log). A nap is a round running out
    // of work, so the priority governor counts it as idle. Only threads
    // that carry the stream's bulk nap: the ones on its ACK path would hold
    // ACKs back.
    uint64_t streamNapNs = uint64_t(streamNapUs_.load(std::memory_order_relaxed)) * 1000;
    if (n == 0 && streamNapNs != 0 && lastBulkNs != 0 && nowNs() - lastBulkNs < BusyPoll::kQuietAfterBulkNs) {
      governor.idle();
      timespec nap{0, long(streamNapNs)};
      while (clock_nanosleep(CLOCK_MONOTONIC, 0, &nap, &nap) == EINTR) {
      }
      w.naps.fetch_add(1, std::memory_order_relaxed);
      n = epoll_wait(w.epollFd, events, kMaxEvents, 0);
    }
    if (n == 0) {
      governor.idle();
      uint64_t blockedAtNs = nowNs();
      n = epoll_wait(w.epollFd, events, kMaxEvents, -1);
      sleptNs = nowNs() - blockedAtNs;
      w.wakeups.fetch_add(1, std::memory_order_relaxed);
      if (n > 0 && spinFromNs != 0) {
        busyPoll.blocked(nowNs() - spinFromNs);
        w.busyPollWindowNs.store(busyPoll.windowNs(), std::memory_order_relaxed);
      }
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // cannot happen on a valid epoll fd
      continue;
    }
    bool lone = sleptNs >= kSparseGapNs || (sleptNs == 0 && sparse);
    RoundResult result;
    {
      std::lock_guard<std::mutex> lock(w.roundMutex);
      auto nets = networks();
      for (int i = 0; i < n; i++) {
        uint64_t tag = events[i].data.u64;
        if (tag == kStopTag) return;
        if (tag == kUdpTag) {
          receiveBatch(w, *nets, *scratch, lone, result);
          continue;
        }
        auto it = nets->find(uint32_t(tag));
        if (it == nets->end()) continue;  // removed meanwhile
        Network* net = it->second.get();
        if (net->tapFailed[w.queue]) continue;
        if (events[i].events & EPOLLIN) {
          result.frames += drainTap(w, net, scratch->tap, lone, &result.bytes);
        } else if (events[i].events & (EPOLLERR | EPOLLHUP)) {
          // The TAP of a device someone deleted reports an error for good.
          net->counters.drop(kDropTapReadError);
          net->tapFailed[w.queue] = 1;
          epoll_ctl(w.epollFd, EPOLL_CTL_DEL, net->tapFds[w.queue], nullptr);
        }
      }
    }
    if (result.datagrams + result.frames > 0) {
      w.rounds.fetch_add(1, std::memory_order_relaxed);
      governor.busy();
      bool light = result.bytes <= BusyPoll::kMaxRoundBytes;
      sparse = lone && light;
      bool request = result.frames > 0 && light;
      uint64_t now = nowNs();
      if (!light) {
        lastBulkNs = now;
        lastBulkNs_.store(now, std::memory_order_relaxed);
      }
      // A stream's ACKs and short segments may reach a thread that sees none
      // of its bulk rounds (those went to another CPU's queue): whether a
      // stream flows is the engine's question, not the thread's.
      uint64_t engineBulkNs = lastBulkNs_.load(std::memory_order_relaxed);
      bool inStream = engineBulkNs != 0 && now - engineBulkNs < BusyPoll::kQuietAfterBulkNs;
      spinFromNs = request && !inStream ? now : 0;
    }
  }
}

void Engine::handleDatagram(const NetworkMap& nets, const uint8_t* p, size_t bytes, Coalescer& coalescer) {
  if (bytes < kVxlanHeaderBytes + kEthHeaderBytes) {
    host_.drop(kDropShortDatagram);
    return;
  }
  uint32_t vni;
  if (!parseVxlanHeader(p, &vni)) {
    host_.drop(kDropBadVxlanFlags);
    return;
  }
  auto it = nets.find(vni);
  if (it == nets.end()) {
    host_.drop(kDropUnknownVni);
    return;
  }
  coalescer.add(it->second.get(), p + kVxlanHeaderBytes, bytes - kVxlanHeaderBytes);
}

// ---------------------------------------------------------------------------
// Test hooks

void Engine::injectTapFrame(uint32_t vni, const uint8_t* data, size_t bytes) {
  if (workers_.empty()) throw std::runtime_error("the engine is closed");
  auto nets = networks();
  auto it = nets->find(vni);
  if (it == nets->end()) throw std::runtime_error("no network with VNI " + std::to_string(vni) + " on this engine");
  if (bytes > kMaxFrameBytes) throw std::runtime_error("frame larger than " + std::to_string(kMaxFrameBytes) + " bytes");
  std::vector<uint8_t> copy(data, data + bytes);
  auto batch = std::make_unique<TxBatch>(sourceFds_.fds, port_);
  auto peers = std::atomic_load(&it->second->peers);
  handleTapFrame(it->second.get(), 0, *peers, copy.data(), copy.size(), *batch);
  batch->flush();
}

void Engine::injectDatagram(const uint8_t* data, size_t bytes, size_t segmentBytes) {
  if (segmentBytes == 0) segmentBytes = bytes;
  auto nets = networks();
  Coalescer coalescer(options_.offloads, 0);
  for (size_t off = 0; off < bytes; off += segmentBytes)
    handleDatagram(*nets, data + off, std::min(segmentBytes, bytes - off), coalescer);
  coalescer.flush();
}

}  // namespace weft
