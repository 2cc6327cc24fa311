// rtnetlink for the container wiring path: making a container's namespace and
// its veths, addresses and routes, and the kernel data plane's FDB and
// neighbour entries for remote endpoints, without starting `ip` or `bridge`
// (a process spawned
// from the agent and, for the sandbox side, a fork of it: ~3 ms each, where
// the kernel work is a fraction of that). Messages are built with libmnl
// (netfilter.org's minimal netlink library, the one iproute2 and nftables
// use); the work runs on a libuv worker thread so the event loop never waits.
//
// A network namespace belongs to a THREAD on Linux. The worker enters other
// namespaces only for a moment (to open a socket there, or to make a new
// namespace), and ThreadNetnsGuard puts it back in the namespace it came
// from on every path, aborting the process if it cannot: a pool thread left
// in a container's namespace would run the next `ip` command (posix_spawn
// inherits the thread's namespace) or the next file operation there.
//
// netnsCreate(name: string, loopbackUp: boolean) -> Promise<void>
//   what `ip netns add NAME` does: /run/netns made a shared mount point once,
//   the file created, a new namespace bind-mounted onto it (so `ip netns`,
//   `ip netns del` and every other tool see it); loopback brought up in it.
// netlinkApply(ops: object[]) -> Promise<void>
//   applies the changes in order, stopping at the first failure; see NetlinkOp
//   in src/netlink/rtnetlink.ts for the operations. A failure rejects with an
//   Error carrying code (ENODEV…), errno, operation, device, netns, opIndex.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/if_bridge.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <napi.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "netlink.h"

namespace {

constexpr const char* kNetnsRunDir = "/run/netns";
/** Room for any request we build and any single answer we read (a link's attributes are a few KB). */
constexpr size_t kNetlinkBufferBytes = 32 * 1024;
/** IFALIASZ (256) with its terminating NUL: the kernel's limit on a link alias. */
constexpr size_t kMaxAliasBytes = 256;

/** What failed, for the JavaScript error. */
struct OpFailure {
  int errnum = 0;
  std::string operation;  // e.g. "create veth wv12ab (peer eth0 in netns c1)"
  std::string device;
  std::string netns;  // "" = the agent's own
  std::string kernelMessage;  // the kernel's extended ack text, if any
};

/**
 * Keeps the calling thread's network namespace: after enter()/enterNew(), the
 * destructor (or restore()) puts the thread back where it was. If that is
 * impossible the process aborts, loudly, rather than hand a thread in the
 * wrong namespace back to libuv's pool.
 */
class ThreadNetnsGuard {
 public:
  ThreadNetnsGuard() : original_(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) {}
  ThreadNetnsGuard(const ThreadNetnsGuard&) = delete;
  ThreadNetnsGuard& operator=(const ThreadNetnsGuard&) = delete;
  ~ThreadNetnsGuard() {
    restore();
    if (original_ >= 0) close(original_);
  }

  /** errno if the thread's own namespace could not be opened (then nothing may move it). */
  int openError() const { return original_ >= 0 ? 0 : errno_; }

  /** setns into the namespace `nsFd` refers to; 0 or errno. */
  int enter(int nsFd) {
    moved_ = true;
    return setns(nsFd, CLONE_NEWNET) == 0 ? 0 : errno;
  }

  /** A new, empty namespace for this thread; 0 or errno. */
  int enterNew() {
    moved_ = true;
    return unshare(CLONE_NEWNET) == 0 ? 0 : errno;
  }

  void restore() {
    if (!moved_) return;
    if (setns(original_, CLONE_NEWNET) != 0) {
      fprintf(stderr,
              "weft native: cannot return a worker thread to its network namespace (%s); aborting rather "
              "than let it run later work in a container's namespace\n",
              strerror(errno));
      abort();
    }
    moved_ = false;
  }

 private:
  int original_;
  int errno_ = original_ >= 0 ? 0 : errno;
  bool moved_ = false;
};

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string netnsPath(const std::string& name) { return std::string(kNetnsRunDir) + "/" + name; }

/** One rtnetlink socket, bound to the namespace the thread was in when it was opened. */
class Rtnl {
 public:
  Rtnl() : buffer_(new char[kNetlinkBufferBytes]) {}
  ~Rtnl() {
    if (nl_ != nullptr) mnl_socket_close(nl_);
  }
  Rtnl(const Rtnl&) = delete;
  Rtnl& operator=(const Rtnl&) = delete;

  /** Opens it in the thread's current namespace; 0 or errno. */
  int open() {
    nl_ = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (nl_ == nullptr) return errno;
    int on = 1;
    // The kernel's reason in words ("Master device not found"…) with each error; short acks.
    mnl_socket_setsockopt(nl_, NETLINK_EXT_ACK, &on, sizeof on);
    mnl_socket_setsockopt(nl_, NETLINK_CAP_ACK, &on, sizeof on);
    if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) return errno;
    portid_ = mnl_socket_get_portid(nl_);
    return 0;
  }

  /** A fresh request header of `type` in the buffer. */
  nlmsghdr* begin(uint16_t type, uint16_t flags) {
    nlmsghdr* nlh = mnl_nlmsg_put_header(buffer_.get());
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    nlh->nlmsg_seq = ++seq_;
    return nlh;
  }

  /**
   * A fresh link request (RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK) naming the
   * link `name`; its ifinfomsg (zeroed, AF_UNSPEC) in `*ifm` if asked for.
   */
  nlmsghdr* beginLink(uint16_t type, uint16_t flags, const std::string& name, ifinfomsg** ifm = nullptr) {
    nlmsghdr* nlh = begin(type, flags);
    auto* header = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    header->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, name.c_str());
    if (ifm != nullptr) *ifm = header;
    return nlh;
  }

  /**
   * Sends the request in the buffer and reads until its acknowledgement; 0 or
   * errno (the kernel's text in `kernelMessage`). `ifindex` gets the index of a
   * link the kernel answers with (RTM_GETLINK).
   */
  int transact(std::string* kernelMessage, int* ifindex = nullptr) {
    nlmsghdr* nlh = reinterpret_cast<nlmsghdr*>(buffer_.get());
    if (mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len) < 0) return errno;
    Reply reply;
    reply.kernelMessage = kernelMessage;
    reply.ifindex = ifindex;
    mnl_cb_t control[NLMSG_MIN_TYPE] = {};
    control[NLMSG_ERROR] = OnError;
    for (;;) {
      ssize_t n = mnl_socket_recvfrom(nl_, buffer_.get(), kNetlinkBufferBytes);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      int r = mnl_cb_run2(buffer_.get(), size_t(n), seq_, portid_, OnData, &reply, control, NLMSG_MIN_TYPE);
      if (r == MNL_CB_ERROR) return reply.errnum != 0 ? reply.errnum : errno;
      if (r == MNL_CB_STOP) return 0;
    }
  }

  /**
   * A fresh neighbour request (RTM_NEWNEIGH as create-or-replace, or
   * RTM_DELNEIGH) on the link with index `ifindex`; its ndmsg in `*ndm`.
   */
  nlmsghdr* beginNeigh(bool add, uint8_t family, int ifindex, ndmsg** ndm) {
    nlmsghdr* nlh = begin(add ? RTM_NEWNEIGH : RTM_DELNEIGH, add ? NLM_F_CREATE | NLM_F_REPLACE : 0);
    auto* header = static_cast<ndmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ndmsg)));
    header->ndm_family = family;
    header->ndm_ifindex = ifindex;
    *ndm = header;
    return nlh;
  }

  /**
   * The index of the link called `name`; 0 or errno. Asked of the kernel once
   * per batch (a peer's FDB, neighbour and announcement all name the same
   * devices); forgetLinks() after a change that makes or removes links.
   */
  int linkIndex(const std::string& name, int* index, std::string* kernelMessage) {
    auto known = linkIndexes_.find(name);
    if (known != linkIndexes_.end()) {
      *index = known->second;
      return 0;
    }
    nlmsghdr* nlh = beginLink(RTM_GETLINK, 0, name);
    mnl_attr_put_u32(nlh, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    *index = 0;
    int err = transact(kernelMessage, index);
    if (err == 0 && *index <= 0) err = ENODEV;
    if (err == 0) linkIndexes_[name] = *index;
    return err;
  }

  void forgetLinks() { linkIndexes_.clear(); }

 private:
  struct Reply {
    int errnum = 0;
    std::string* kernelMessage;
    int* ifindex;
  };

  static int OnData(const nlmsghdr* nlh, void* data) {
    auto* reply = static_cast<Reply*>(data);
    if (nlh->nlmsg_type == RTM_NEWLINK && reply->ifindex != nullptr &&
        mnl_nlmsg_get_payload_len(nlh) >= sizeof(ifinfomsg)) {
      *reply->ifindex = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh))->ifi_index;
    }
    return MNL_CB_OK;
  }

  static int OnExtAckAttr(const nlattr* attr, void* data) {
    if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG && mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) == 0)
      *static_cast<std::string*>(data) = mnl_attr_get_str(attr);
    return MNL_CB_OK;
  }

  static int OnError(const nlmsghdr* nlh, void* data) {
    auto* reply = static_cast<Reply*>(data);
    if (mnl_nlmsg_get_payload_len(nlh) < sizeof(nlmsgerr)) {
      reply->errnum = EBADMSG;
      errno = EBADMSG;
      return MNL_CB_ERROR;
    }
    const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
    if (err->error == 0) return MNL_CB_STOP;  // the acknowledgement
    // NETLINK_CAP_ACK: the request is not echoed, so the attributes follow the nlmsgerr.
    if ((nlh->nlmsg_flags & NLM_F_ACK_TLVS) && (nlh->nlmsg_flags & NLM_F_CAPPED) && reply->kernelMessage) {
      const char* tlvs = static_cast<const char*>(mnl_nlmsg_get_payload(nlh)) + NLMSG_ALIGN(sizeof(nlmsgerr));
      size_t tlvBytes = mnl_nlmsg_get_payload_len(nlh) - NLMSG_ALIGN(sizeof(nlmsgerr));
      mnl_attr_parse_payload(tlvs, tlvBytes, OnExtAckAttr, reply->kernelMessage);
    }
    reply->errnum = -err->error;
    errno = -err->error;
    return MNL_CB_ERROR;
  }

  mnl_socket* nl_ = nullptr;
  unsigned portid_ = 0;
  unsigned seq_ = 0;
  std::unique_ptr<char[]> buffer_;
  std::map<std::string, int> linkIndexes_;
};

// ------------------------------------------------------------------ operations

enum class OpKind {
  VethAdd,
  LinkSet,
  BridgePortSet,
  AddrReplace,
  AddrDelete,
  RouteReplaceDefault,
  LinkDelete,
  FdbReplace,
  FdbDelete,
  NeighReplace,
  NeighDelete,
  Announce,
};

/** One change, parsed on the JavaScript thread (see NetlinkOp in rtnetlink.ts). */
struct Op {
  OpKind kind = OpKind::LinkSet;
  std::string netns;  // "" = the agent's own
  std::string name;   // link (or dev for addresses and routes)
  int mtu = -1;
  std::string alias;
  bool hasAlias = false;
  std::string master;
  int up = -1;  // -1 unchanged, 0 down, 1 up
  bool addrGenModeNone = false;
  std::string peerName;
  uint8_t peerMac[6] = {};
  bool hasPeerMac = false;
  int peerMtu = -1;
  std::string peerNetns;
  int isolated = -1;
  in_addr address{};
  int prefixLength = 0;
  in_addr gateway{};
  uint8_t mac[6] = {};  // FDB and neighbour entries
  bool self = true;     // FDB: the device's own table (vxlan: MAC -> remote VTEP), else its master bridge's
  bool hasDst = false;  // FDB self: `address` is the remote VTEP
};

std::string macText(const uint8_t mac[6]) {
  char text[18];
  snprintf(text, sizeof text, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
  return text;
}

std::string describe(const Op& op) {
  char ip[INET_ADDRSTRLEN];
  switch (op.kind) {
    case OpKind::VethAdd:
      return "create veth " + op.name + " (peer " + op.peerName + " in netns " + op.peerNetns + ")";
    case OpKind::LinkSet:
      return "set link " + op.name + (op.master.empty() ? "" : " (master " + op.master + ")");
    case OpKind::BridgePortSet:
      return "set bridge port options of " + op.name;
    case OpKind::AddrReplace:
    case OpKind::AddrDelete:
      inet_ntop(AF_INET, &op.address, ip, sizeof ip);
      return std::string(op.kind == OpKind::AddrReplace ? "add address " : "delete address ") + ip + "/" +
             std::to_string(op.prefixLength) + " on " + op.name;
    case OpKind::RouteReplaceDefault:
      inet_ntop(AF_INET, &op.gateway, ip, sizeof ip);
      return std::string("set default route via ") + ip + " dev " + op.name;
    case OpKind::LinkDelete:
      return "delete link " + op.name;
    case OpKind::FdbReplace:
    case OpKind::FdbDelete:
      inet_ntop(AF_INET, &op.address, ip, sizeof ip);
      return std::string(op.kind == OpKind::FdbReplace ? "set FDB entry " : "delete FDB entry ") + macText(op.mac) +
             " on " + op.name + (op.self ? " (self" : " (master") +
             (op.hasDst ? std::string(", dst ") + ip + ")" : std::string(")"));
    case OpKind::NeighReplace:
    case OpKind::NeighDelete:
      inet_ntop(AF_INET, &op.address, ip, sizeof ip);
      return std::string(op.kind == OpKind::NeighReplace ? "set neighbour " : "delete neighbour ") + ip +
             (op.kind == OpKind::NeighReplace ? " lladdr " + macText(op.mac) : std::string()) + " on " + op.name;
    case OpKind::Announce:
      inet_ntop(AF_INET, &op.address, ip, sizeof ip);
      return std::string("announce ") + ip + " at " + macText(op.mac) + " on " + op.name;
  }
  return "?";
}

/** Sockets per namespace for one batch: each opened once, in its namespace, then used from ours. */
class Sockets {
 public:
  /** The rtnetlink socket for `netns` ("" = the thread's own); 0 or errno. */
  int get(const std::string& netns, Rtnl** out) {
    auto it = sockets_.find(netns);
    if (it != sockets_.end()) {
      *out = it->second.get();
      return 0;
    }
    auto rtnl = std::make_unique<Rtnl>();
    int err = inNamespace(netns, [&] { return rtnl->open(); });
    if (err != 0) return err;
    *out = rtnl.get();
    sockets_[netns] = std::move(rtnl);
    return 0;
  }

  /** Links were made or removed: no socket's remembered link indexes hold any more. */
  void forgetLinks() {
    for (auto& entry : sockets_) entry.second->forgetLinks();
  }

  /** A raw packet socket in `netns` (for ARP announcements); 0 or errno. */
  int packet(const std::string& netns, int* out) {
    auto it = packets_.find(netns);
    if (it != packets_.end()) {
      *out = it->second->get();
      return 0;
    }
    int fd = -1;
    int err = inNamespace(netns, [&] {
      fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);  // protocol 0: sends only, receives nothing
      return fd >= 0 ? 0 : errno;
    });
    if (err != 0) return err;
    *out = fd;
    packets_[netns] = std::make_unique<Fd>(fd);
    return 0;
  }

 private:
  /** Runs `open` with the thread in `netns` (sockets stay bound to it); back in our own after. */
  template <typename F>
  static int inNamespace(const std::string& netns, F open) {
    if (netns.empty()) return open();
    Fd nsFd(::open(netnsPath(netns).c_str(), O_RDONLY | O_CLOEXEC));
    if (nsFd.get() < 0) return errno;
    ThreadNetnsGuard guard;
    int err = guard.openError();
    if (err == 0) err = guard.enter(nsFd.get());
    return err != 0 ? err : open();
  }  // the guard puts the thread back here

  std::map<std::string, std::unique_ptr<Rtnl>> sockets_;
  std::map<std::string, std::unique_ptr<Fd>> packets_;
};

/**
 * An ARP announcement (RFC 5227: a request with sender = target = `ip`) from
 * `mac`, broadcast out of the link with index `ifindex`: a host that is
 * waiting for `ip`'s ARP answer (its entry INCOMPLETE) takes it at once and
 * sends what it queued; others ignore it (Linux adds no entry for it).
 */
int sendArpAnnouncement(int packetFd, int ifindex, in_addr ip, const uint8_t mac[6]) {
  uint8_t frame[42] = {};
  memset(frame, 0xff, 6);                     // destination: broadcast
  memcpy(frame + 6, mac, 6);                  // source
  frame[12] = 0x08, frame[13] = 0x06;         // EtherType ARP
  frame[14] = 0x00, frame[15] = 0x01;         // hardware type Ethernet
  frame[16] = 0x08, frame[17] = 0x00;         // protocol IPv4
  frame[18] = 6, frame[19] = 4;               // address lengths
  frame[20] = 0x00, frame[21] = 0x01;         // request
  memcpy(frame + 22, mac, 6);                 // sender MAC
  memcpy(frame + 28, &ip, 4);                 // sender IP
  memcpy(frame + 38, &ip, 4);                 // target IP (target MAC stays zero)
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_ifindex = ifindex;
  to.sll_halen = 6;
  memset(to.sll_addr, 0xff, 6);
  if (sendto(packetFd, frame, sizeof frame, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0) return errno;
  return 0;
}

/** Applies one change; 0 or errno with the kernel's message in `failure`. */
int applyOp(Sockets& sockets, const Op& op, OpFailure& failure) {
  Rtnl* rtnl = nullptr;
  int err = sockets.get(op.netns, &rtnl);
  if (err != 0) {
    if (err == ENOENT) failure.kernelMessage = "network namespace \"" + op.netns + "\" does not exist";
    return err;
  }
  std::string& msg = failure.kernelMessage;
  switch (op.kind) {
    case OpKind::VethAdd: {
      Fd peerNs(open(netnsPath(op.peerNetns).c_str(), O_RDONLY | O_CLOEXEC));
      if (peerNs.get() < 0) {
        int e = errno;
        if (e == ENOENT) msg = "network namespace \"" + op.peerNetns + "\" does not exist";
        return e;
      }
      nlmsghdr* nlh = rtnl->beginLink(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, op.name);
      if (op.mtu > 0) mnl_attr_put_u32(nlh, IFLA_MTU, uint32_t(op.mtu));
      nlattr* linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
      mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
      nlattr* data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
      nlattr* peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
      // The peer is described as a link of its own: an ifinfomsg, then its attributes.
      auto* peerIfm = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
      peerIfm->ifi_family = AF_UNSPEC;
      mnl_attr_put_strz(nlh, IFLA_IFNAME, op.peerName.c_str());
      if (op.hasPeerMac) mnl_attr_put(nlh, IFLA_ADDRESS, 6, op.peerMac);
      if (op.peerMtu > 0) mnl_attr_put_u32(nlh, IFLA_MTU, uint32_t(op.peerMtu));
      mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, uint32_t(peerNs.get()));
      mnl_attr_nest_end(nlh, peer);
      mnl_attr_nest_end(nlh, data);
      mnl_attr_nest_end(nlh, linkinfo);
      sockets.forgetLinks();  // in every namespace: a veth's two ends go together
      return rtnl->transact(&msg);
    }
    case OpKind::LinkSet: {
      // addrgenmode first, by itself, as `ip` does: the kernel applies IFLA_AF_SPEC after
      // bringing the link up, by when an IPv6 link-local address would already exist.
      if (op.addrGenModeNone) {
        nlmsghdr* nlh = rtnl->beginLink(RTM_NEWLINK, 0, op.name);
        nlattr* spec = mnl_attr_nest_start(nlh, IFLA_AF_SPEC);
        nlattr* inet6 = mnl_attr_nest_start(nlh, AF_INET6);
        mnl_attr_put_u8(nlh, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE);
        mnl_attr_nest_end(nlh, inet6);
        mnl_attr_nest_end(nlh, spec);
        if ((err = rtnl->transact(&msg)) != 0) return err;
      }
      int masterIndex = 0;
      if (!op.master.empty()) {
        if ((err = rtnl->linkIndex(op.master, &masterIndex, &msg)) != 0) {
          if (err == ENODEV) msg = "master device " + op.master + " does not exist";
          return err;
        }
      }
      ifinfomsg* ifm = nullptr;
      nlmsghdr* nlh = rtnl->beginLink(RTM_NEWLINK, 0, op.name, &ifm);
      if (op.up >= 0) {
        ifm->ifi_change = IFF_UP;
        ifm->ifi_flags = op.up == 1 ? IFF_UP : 0;
      }
      if (op.mtu > 0) mnl_attr_put_u32(nlh, IFLA_MTU, uint32_t(op.mtu));
      if (op.hasAlias) mnl_attr_put_strz(nlh, IFLA_IFALIAS, op.alias.c_str());
      if (masterIndex > 0) mnl_attr_put_u32(nlh, IFLA_MASTER, uint32_t(masterIndex));
      return rtnl->transact(&msg);
    }
    case OpKind::BridgePortSet: {
      nlmsghdr* nlh = rtnl->beginLink(RTM_NEWLINK, 0, op.name);
      nlattr* linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
      mnl_attr_put_strz(nlh, IFLA_INFO_SLAVE_KIND, "bridge");
      nlattr* data = mnl_attr_nest_start(nlh, IFLA_INFO_SLAVE_DATA);
      if (op.isolated >= 0) mnl_attr_put_u8(nlh, IFLA_BRPORT_ISOLATED, uint8_t(op.isolated));
      mnl_attr_nest_end(nlh, data);
      mnl_attr_nest_end(nlh, linkinfo);
      return rtnl->transact(&msg);
    }
    case OpKind::AddrReplace:
    case OpKind::AddrDelete: {
      int index = 0;
      if ((err = rtnl->linkIndex(op.name, &index, &msg)) != 0) return err;
      bool add = op.kind == OpKind::AddrReplace;
      nlmsghdr* nlh = rtnl->begin(add ? RTM_NEWADDR : RTM_DELADDR, add ? NLM_F_CREATE | NLM_F_REPLACE : 0);
      auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifaddrmsg)));
      ifa->ifa_family = AF_INET;
      ifa->ifa_prefixlen = uint8_t(op.prefixLength);
      ifa->ifa_scope = RT_SCOPE_UNIVERSE;
      ifa->ifa_index = uint32_t(index);
      mnl_attr_put(nlh, IFA_LOCAL, sizeof(in_addr), &op.address);
      mnl_attr_put(nlh, IFA_ADDRESS, sizeof(in_addr), &op.address);
      return rtnl->transact(&msg);
    }
    case OpKind::RouteReplaceDefault: {
      int index = 0;
      if ((err = rtnl->linkIndex(op.name, &index, &msg)) != 0) return err;
      nlmsghdr* nlh = rtnl->begin(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
      auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(rtmsg)));
      rtm->rtm_family = AF_INET;
      rtm->rtm_dst_len = 0;
      rtm->rtm_table = RT_TABLE_MAIN;
      rtm->rtm_protocol = RTPROT_BOOT;  // what `ip route` records for routes it adds
      rtm->rtm_scope = RT_SCOPE_UNIVERSE;
      rtm->rtm_type = RTN_UNICAST;
      mnl_attr_put(nlh, RTA_GATEWAY, sizeof(in_addr), &op.gateway);
      mnl_attr_put_u32(nlh, RTA_OIF, uint32_t(index));
      return rtnl->transact(&msg);
    }
    case OpKind::LinkDelete: {
      rtnl->beginLink(RTM_DELLINK, 0, op.name);
      sockets.forgetLinks();  // in every namespace: a veth's two ends go together
      return rtnl->transact(&msg);
    }
    case OpKind::FdbReplace:
    case OpKind::FdbDelete: {
      // As `bridge fdb replace|del MAC dev DEV [dst IP] self permanent | master static`.
      int index = 0;
      if ((err = rtnl->linkIndex(op.name, &index, &msg)) != 0) return err;
      ndmsg* ndm = nullptr;
      nlmsghdr* nlh = rtnl->beginNeigh(op.kind == OpKind::FdbReplace, PF_BRIDGE, index, &ndm);
      ndm->ndm_flags = op.self ? NTF_SELF : NTF_MASTER;
      // A bridge's "permanent" entry is one of its own addresses; a remote MAC there is "static".
      ndm->ndm_state = uint16_t((op.self ? NUD_PERMANENT : NUD_REACHABLE) | NUD_NOARP);
      mnl_attr_put(nlh, NDA_LLADDR, 6, op.mac);
      if (op.hasDst) mnl_attr_put(nlh, NDA_DST, sizeof(in_addr), &op.address);
      return rtnl->transact(&msg);
    }
    case OpKind::NeighReplace:
    case OpKind::NeighDelete: {
      // As `ip neigh replace IP lladdr MAC dev DEV nud permanent` / `ip neigh del IP dev DEV`.
      int index = 0;
      if ((err = rtnl->linkIndex(op.name, &index, &msg)) != 0) return err;
      bool add = op.kind == OpKind::NeighReplace;
      ndmsg* ndm = nullptr;
      nlmsghdr* nlh = rtnl->beginNeigh(add, AF_INET, index, &ndm);
      ndm->ndm_state = NUD_PERMANENT;
      mnl_attr_put(nlh, NDA_DST, sizeof(in_addr), &op.address);
      if (add) mnl_attr_put(nlh, NDA_LLADDR, 6, op.mac);
      return rtnl->transact(&msg);
    }
    case OpKind::Announce: {
      // Best effort, never the batch's failure: without it a waiting
      // container resolves on its next ARP try anyway, while a failed batch
      // would leave the entries after it unwritten (no such bridge, no
      // CAP_NET_RAW, the bridge down).
      int index = 0;
      std::string ignored;
      int fd = -1;
      if (rtnl->linkIndex(op.name, &index, &ignored) == 0 && sockets.packet(op.netns, &fd) == 0)
        sendArpAnnouncement(fd, index, op.address, op.mac);
      return 0;
    }
  }
  return EINVAL;
}

// ------------------------------------------------------------------ namespaces

/** Set once /run/netns is known to be a shared mount point (see ensureNetnsRunDir). */
std::atomic<bool> netnsRunDirShared{false};

/**
 * /run/netns as a shared mount point, as `ip netns add` makes it, so mounts in
 * it propagate. Once per process: `ip` does it on every call, but with MS_REC
 * that walks every namespace mounted under it. 0 or errno.
 */
int ensureNetnsRunDir() {
  if (netnsRunDirShared.load(std::memory_order_acquire)) return 0;
  mkdir(kNetnsRunDir, 0755);
  bool madeMountPoint = false;
  while (mount("", kNetnsRunDir, "none", MS_SHARED | MS_REC, nullptr) != 0) {
    // EINVAL: not a mount point yet; make it one (a bind mount onto itself), once.
    if (errno != EINVAL || madeMountPoint) return errno;
    if (mount(kNetnsRunDir, kNetnsRunDir, "none", MS_BIND | MS_REC, nullptr) != 0) return errno;
    madeMountPoint = true;
  }
  netnsRunDirShared.store(true, std::memory_order_release);
  return 0;
}

/** Makes the named namespace as `ip netns add` does; loopback up if asked. 0 or errno with `failure` filled. */
int createNetns(const std::string& name, bool loopbackUp, OpFailure& failure) {
  failure.netns = name;
  failure.operation = "create network namespace " + name;
  int err = ensureNetnsRunDir();
  if (err != 0) {
    failure.kernelMessage = std::string("cannot make ") + kNetnsRunDir + " a shared mount point";
    return err;
  }
  std::string path = netnsPath(name);
  {
    Fd file(open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0));
    if (file.get() < 0) {
      err = errno;
      if (err == EEXIST) failure.kernelMessage = "network namespace \"" + name + "\" already exists";
      return err;
    }
  }
  {
    ThreadNetnsGuard guard;
    if ((err = guard.openError()) != 0 || (err = guard.enterNew()) != 0) {
      unlink(path.c_str());
      return err;
    }
    // Keeps the namespace alive without a process in it, where `ip netns` looks.
    if (mount("/proc/thread-self/ns/net", path.c_str(), "none", MS_BIND, nullptr) != 0) {
      err = errno;
      guard.restore();
      unlink(path.c_str());
      return err;
    }
    if (loopbackUp) {
      // A socket opened now belongs to the new namespace; it stays there after the thread leaves.
      Rtnl rtnl;
      err = rtnl.open();
      guard.restore();
      if (err == 0) {
        ifinfomsg* ifm = nullptr;
        rtnl.beginLink(RTM_NEWLINK, 0, "lo", &ifm);
        ifm->ifi_change = IFF_UP;
        ifm->ifi_flags = IFF_UP;
        err = rtnl.transact(&failure.kernelMessage);
      }
      if (err != 0) {
        failure.operation = "bring up lo in new network namespace " + name;
        umount2(path.c_str(), MNT_DETACH);
        unlink(path.c_str());
        return err;
      }
    }
  }
  return 0;
}

// ------------------------------------------------------------------ JavaScript

/** The Error a failure rejects with: message, code (ENODEV…), errno, operation, device, netns. */
Napi::Error toJsError(Napi::Env env, const OpFailure& f, int opIndex) {
  bool named = f.netns.empty() || f.operation.find("namespace " + f.netns) != std::string::npos;
  std::string where = named ? "" : " in netns " + f.netns;
  std::string text = f.operation + where + ": " + strerror(f.errnum);
  if (!f.kernelMessage.empty()) text += " (" + f.kernelMessage + ")";
  Napi::Error e = Napi::Error::New(env, text);
  const char* name = strerrorname_np(f.errnum);
  e.Set("code", name != nullptr ? name : "EUNKNOWN");
  e.Set("errno", Napi::Number::New(env, f.errnum));
  e.Set("operation", f.operation);
  e.Set("device", f.device);
  e.Set("netns", f.netns);
  if (opIndex >= 0) e.Set("opIndex", Napi::Number::New(env, opIndex));
  return e;
}

class NetlinkWorker : public Napi::AsyncWorker {
 public:
  NetlinkWorker(Napi::Env env, std::vector<Op> ops, std::string createName, bool loopbackUp)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        ops_(std::move(ops)),
        createName_(std::move(createName)),
        loopbackUp_(loopbackUp) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    if (!createName_.empty()) {
      failure_.errnum = createNetns(createName_, loopbackUp_, failure_);
      if (failure_.errnum != 0) SetError("netns");
      return;
    }
    Sockets sockets;
    for (size_t i = 0; i < ops_.size(); i++) {
      int err = applyOp(sockets, ops_[i], failure_);
      if (err != 0) {
        failure_.errnum = err;
        failure_.operation = describe(ops_[i]);
        failure_.device = ops_[i].name;
        failure_.netns = ops_[i].netns;
        failedIndex_ = int(i);
        SetError("netlink");
        return;
      }
    }
  }

  void OnOK() override { deferred_.Resolve(Env().Undefined()); }

  void OnError(const Napi::Error&) override {
    deferred_.Reject(toJsError(Env(), failure_, failedIndex_).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<Op> ops_;
  std::string createName_;
  bool loopbackUp_;
  OpFailure failure_;
  int failedIndex_ = -1;
};

// Argument parsing (JavaScript thread). rtnetlink.ts validates first; these
// checks keep a wrong call from reaching the kernel as garbage.

std::string ifName(Napi::Env env, const Napi::Object& o, const char* key, bool required = true) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() && !required) return "";
  if (!v.IsString()) throw Napi::TypeError::New(env, std::string(key) + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.empty() || s.size() >= IFNAMSIZ || s.find('/') != std::string::npos || s.find('\0') != std::string::npos)
    throw Napi::TypeError::New(env, std::string(key) + " \"" + s + "\" is not an interface name");
  return s;
}

std::string nsName(Napi::Env env, const Napi::Object& o, const char* key, bool required) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) {
    if (required) throw Napi::TypeError::New(env, std::string(key) + " (a netns name) is required");
    return "";
  }
  if (!v.IsString()) throw Napi::TypeError::New(env, std::string(key) + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.empty() || s.size() > 64 || s.find('/') != std::string::npos || s[0] == '.' ||
      s.find('\0') != std::string::npos)
    throw Napi::TypeError::New(env, std::string(key) + " \"" + s + "\" is not a netns name");
  return s;
}

int optionalInt(Napi::Env env, const Napi::Object& o, const char* key, int min, int max) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return -1;
  if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(key) + " must be a number");
  int n = v.As<Napi::Number>().Int32Value();
  if (n < min || n > max || double(n) != v.As<Napi::Number>().DoubleValue())
    throw Napi::RangeError::New(env, std::string(key) + " out of range");
  return n;
}

in_addr ipv4(Napi::Env env, const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  in_addr a{};
  if (!v.IsString() || inet_pton(AF_INET, v.As<Napi::String>().Utf8Value().c_str(), &a) != 1)
    throw Napi::TypeError::New(env, std::string(key) + " must be an IPv4 address");
  return a;
}

int optionalBool(Napi::Env env, const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return -1;
  if (!v.IsBoolean()) throw Napi::TypeError::New(env, std::string(key) + " must be a boolean");
  return v.As<Napi::Boolean>().Value() ? 1 : 0;
}

/** A MAC "aa:bb:cc:dd:ee:ff" into `out`; false if absent and not required. */
bool macAddress(Napi::Env env, const Napi::Object& o, const char* key, bool required, uint8_t out[6]) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() && !required) return false;
  unsigned b[6];
  char tail;
  std::string text = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
    throw Napi::TypeError::New(env, std::string(key) + " \"" + text + "\" is not of the form aa:bb:cc:dd:ee:ff");
  for (int i = 0; i < 6; i++) out[i] = uint8_t(b[i]);
  return true;
}

Op parseOp(Napi::Env env, const Napi::Object& o) {
  std::string kind = o.Get("op").IsString() ? o.Get("op").As<Napi::String>().Utf8Value() : "";
  Op op;
  op.netns = nsName(env, o, "netns", false);
  if (kind == "vethAdd") {
    op.kind = OpKind::VethAdd;
    op.name = ifName(env, o, "name");
    op.mtu = optionalInt(env, o, "mtu", 68, 65535);
    op.peerName = ifName(env, o, "peerName");
    op.peerMtu = optionalInt(env, o, "peerMtu", 68, 65535);
    op.peerNetns = nsName(env, o, "peerNetns", true);
    op.hasPeerMac = macAddress(env, o, "peerMac", false, op.peerMac);
  } else if (kind == "linkSet") {
    op.name = ifName(env, o, "name");
    op.mtu = optionalInt(env, o, "mtu", 68, 65535);
    Napi::Value alias = o.Get("alias");
    if (!alias.IsUndefined()) {
      if (!alias.IsString()) throw Napi::TypeError::New(env, "alias must be a string");
      op.alias = alias.As<Napi::String>().Utf8Value();
      if (op.alias.size() >= kMaxAliasBytes || op.alias.find('\0') != std::string::npos)
        throw Napi::RangeError::New(env, "alias longer than 255 bytes or containing NUL");
      op.hasAlias = true;
    }
    op.master = ifName(env, o, "master", false);
    op.up = optionalBool(env, o, "up");
    op.addrGenModeNone = optionalBool(env, o, "addrGenModeNone") == 1;
  } else if (kind == "bridgePortSet") {
    op.kind = OpKind::BridgePortSet;
    op.name = ifName(env, o, "name");
    op.isolated = optionalBool(env, o, "isolated");
  } else if (kind == "addrReplace" || kind == "addrDelete") {
    op.kind = kind == "addrReplace" ? OpKind::AddrReplace : OpKind::AddrDelete;
    op.name = ifName(env, o, "dev");
    op.address = ipv4(env, o, "ip");
    op.prefixLength = optionalInt(env, o, "prefixLength", 0, 32);
    if (op.prefixLength < 0) throw Napi::TypeError::New(env, "prefixLength is required");
  } else if (kind == "routeReplaceDefault") {
    op.kind = OpKind::RouteReplaceDefault;
    op.name = ifName(env, o, "dev");
    op.gateway = ipv4(env, o, "gateway");
  } else if (kind == "linkDelete") {
    op.kind = OpKind::LinkDelete;
    op.name = ifName(env, o, "name");
  } else if (kind == "fdbReplace" || kind == "fdbDelete") {
    op.kind = kind == "fdbReplace" ? OpKind::FdbReplace : OpKind::FdbDelete;
    op.name = ifName(env, o, "dev");
    macAddress(env, o, "mac", true, op.mac);
    Napi::Value where = o.Get("where");
    std::string w = where.IsString() ? where.As<Napi::String>().Utf8Value() : "";
    if (w != "self" && w != "master") throw Napi::TypeError::New(env, "where must be \"self\" or \"master\"");
    op.self = w == "self";
    if (!o.Get("dst").IsUndefined()) {
      if (!op.self || op.kind != OpKind::FdbReplace)
        throw Napi::TypeError::New(env, "dst is only for fdbReplace where \"self\"");
      op.address = ipv4(env, o, "dst");
      op.hasDst = true;
    }
  } else if (kind == "announce") {
    op.kind = OpKind::Announce;
    op.name = ifName(env, o, "dev");
    op.address = ipv4(env, o, "ip");
    macAddress(env, o, "mac", true, op.mac);
  } else if (kind == "neighReplace" || kind == "neighDelete") {
    op.kind = kind == "neighReplace" ? OpKind::NeighReplace : OpKind::NeighDelete;
    op.name = ifName(env, o, "dev");
    op.address = ipv4(env, o, "ip");
    if (op.kind == OpKind::NeighReplace) macAddress(env, o, "mac", true, op.mac);
  } else {
    throw Napi::TypeError::New(env, "unknown netlink operation \"" + kind + "\"");
  }
  return op;
}

Napi::Value NetlinkApply(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "ops must be an array");
  Napi::Array list = info[0].As<Napi::Array>();
  std::vector<Op> ops;
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value v = list.Get(i);
    if (!v.IsObject()) throw Napi::TypeError::New(env, "each op must be an object");
    ops.push_back(parseOp(env, v.As<Napi::Object>()));
  }
  auto* worker = new NetlinkWorker(env, std::move(ops), "", false);
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

Napi::Value NetnsCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "name must be a string");
  Napi::Object args = Napi::Object::New(env);
  args.Set("name", info[0]);
  std::string name = nsName(env, args, "name", true);
  bool loopbackUp = info.Length() > 1 && info[1].ToBoolean().Value();
  auto* worker = new NetlinkWorker(env, {}, name, loopbackUp);
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

}  // namespace

namespace weft {

void InitNetlink(Napi::Env env, Napi::Object exports) {
  exports.Set("netlinkApply", Napi::Function::New(env, NetlinkApply));
  exports.Set("netnsCreate", Napi::Function::New(env, NetnsCreate));
}

}  // namespace weft
