// Packet helpers for the userspace VXLAN data plane: Internet checksums, the
// virtio-net header the TAP device speaks (IFF_VNET_HDR), TCP segmentation of
// TSO frames read from the TAP, TCP coalescing of frames written to it, and
// local ARP replies. Everything here is pure computation on caller buffers, so
// it is what the fuzz tests hammer; the I/O lives in engine.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace weft {

constexpr size_t kEthHeaderBytes = 14;
constexpr size_t kVxlanHeaderBytes = 8;
constexpr uint16_t kEtherTypeIPv4 = 0x0800;
constexpr uint16_t kEtherTypeIPv6 = 0x86DD;
constexpr uint16_t kEtherTypeArp = 0x0806;
constexpr uint8_t kIpProtoTcp = 6;
constexpr uint8_t kIpProtoUdp = 17;

constexpr uint8_t kTcpFlagFin = 0x01;
constexpr uint8_t kTcpFlagSyn = 0x02;
constexpr uint8_t kTcpFlagRst = 0x04;
constexpr uint8_t kTcpFlagPsh = 0x08;
constexpr uint8_t kTcpFlagAck = 0x10;
constexpr uint8_t kTcpFlagUrg = 0x20;
constexpr uint8_t kTcpFlagEce = 0x40;
constexpr uint8_t kTcpFlagCwr = 0x80;

// Mirrors struct virtio_net_hdr (linux/virtio_net.h), little-endian on x86 and
// arm64 (the TAP uses the host's byte order unless TUNSETVNETLE/BE is set).
struct VnetHeader {
  uint8_t flags;
  uint8_t gsoType;
  uint16_t hdrLen;
  uint16_t gsoSize;
  uint16_t csumStart;
  uint16_t csumOffset;
};
static_assert(sizeof(VnetHeader) == 10, "virtio_net_hdr is 10 bytes");

constexpr uint8_t kVnetFlagNeedsCsum = 1;
constexpr uint8_t kVnetFlagDataValid = 2;
constexpr uint8_t kVnetGsoNone = 0;
constexpr uint8_t kVnetGsoTcpV4 = 1;
constexpr uint8_t kVnetGsoUdp = 3;
constexpr uint8_t kVnetGsoTcpV6 = 4;
constexpr uint8_t kVnetGsoEcn = 0x80;

inline uint16_t load16(const uint8_t* p) { return uint16_t((p[0] << 8) | p[1]); }
inline uint32_t load32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
inline void store16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
inline void store32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}

// One's-complement sums are computed in the host's byte order over memory as
// it lies (RFC 1071 §2(B)): the folded result, stored back with memcpy, is the
// right bytes on the wire. Every chunk but the last must have even length.
uint64_t checksumAdd(const uint8_t* data, size_t len, uint64_t sum);
// Adds a 16-bit value given in network order (e.g. a length or protocol).
inline uint64_t checksumAddWord(uint64_t sum, uint16_t networkOrderValue) {
  uint8_t b[2];
  store16(b, networkOrderValue);
  uint16_t native;
  std::memcpy(&native, b, 2);
  return sum + native;
}
uint16_t checksumFold(uint64_t sum);
// Stores the complement of the folded sum at p (0 becomes 0xffff, as Linux does).
void checksumStore(uint8_t* p, uint64_t sum);
// True when the data, including its checksum field, sums to all-ones.
inline bool checksumVerifies(uint64_t sum) { return checksumFold(sum) == 0xffff; }

// Sum of the TCP/UDP pseudo header for an IPv4 (ipHeader points at the IP
// header) or IPv6 packet, with the given layer-4 length.
uint64_t pseudoHeaderSum(const uint8_t* ipHeader, bool ipv6, uint8_t protocol, uint32_t l4Bytes);

// Completes a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM): the field at
// csumStart+csumOffset already holds the pseudo-header sum. False if the
// offsets do not fit in the frame.
bool completePartialChecksum(uint8_t* frame, size_t frameBytes, size_t csumStart, size_t csumOffset);

// The parsed headers of a TCP frame (Ethernet + IPv4/IPv6 + TCP).
struct TcpFrame {
  bool ipv6;
  size_t ipOffset;     // == kEthHeaderBytes
  size_t ipHeaderBytes;
  size_t tcpOffset;
  size_t tcpHeaderBytes;
  size_t headerBytes;  // Ethernet + IP + TCP
  size_t payloadBytes;
};
// Parses an untagged Ethernet frame holding IPv4 (no fragment) or IPv6 (no
// extension headers) + TCP. The IP length field must match the frame exactly
// when exactLength, else it must fit. False for anything else.
bool parseTcpFrame(const uint8_t* frame, size_t frameBytes, bool exactLength, TcpFrame* out);

// TCP segmentation of one TSO frame. For segment i (0-based, `count` total)
// writes the segment's headers (Ethernet+IP+TCP, tcp.headerBytes) into
// headerOut; the segment's payload is frame[tcp.headerBytes + i*mss ..] of
// segmentPayloadBytes(i). IP ids/lengths/checksums and TCP seq/flags/checksum
// are set for that segment.
struct TsoPlan {
  TcpFrame tcp;
  size_t mss;
  size_t count;
  size_t payloadBytes(size_t i) const {
    size_t start = i * mss;
    size_t left = tcp.payloadBytes - start;
    return left < mss ? left : mss;
  }
};
bool planTso(const uint8_t* frame, size_t frameBytes, const VnetHeader& vnet, TsoPlan* out);
void buildTsoSegmentHeader(const uint8_t* frame, const TsoPlan& plan, size_t i, uint8_t* headerOut);

// Writes a VXLAN header (RFC 7348: flags 0x08, VNI) at p.
inline void writeVxlanHeader(uint8_t* p, uint32_t vni) {
  p[0] = 0x08;
  p[1] = p[2] = p[3] = 0;
  p[4] = uint8_t(vni >> 16);
  p[5] = uint8_t(vni >> 8);
  p[6] = uint8_t(vni);
  p[7] = 0;
}
// Parses a VXLAN header; false (and the reason) for wrong flags or reserved
// bits, which Linux drops too.
bool parseVxlanHeader(const uint8_t* p, uint32_t* vni);

// If frame is an ARP request (Ethernet/IPv4), returns true and its target and
// sender protocol addresses (network order in host uint32 via load32).
bool parseArpRequest(const uint8_t* frame, size_t frameBytes, uint32_t* targetIp, uint32_t* senderIp);
// Builds the ARP reply "targetIp is at targetMac" to the request in `request`
// into out (42 bytes). Returns its length.
size_t buildArpReply(const uint8_t* request, const uint8_t targetMac[6], uint8_t* out);

inline uint64_t macToKey(const uint8_t* mac) {
  uint64_t k = 0;
  for (int i = 0; i < 6; i++) k = (k << 8) | mac[i];
  return k;
}
inline void keyToMac(uint64_t k, uint8_t* mac) {
  for (int i = 5; i >= 0; i--) {
    mac[i] = uint8_t(k);
    k >>= 8;
  }
}
inline bool isMulticastMac(const uint8_t* mac) { return (mac[0] & 1) != 0; }

// A hash of the frame's flow, for the outer UDP source port (RFC 7348 5.:
// underlay routers and NICs spread VXLAN traffic by its source port): IP
// addresses, protocol and, for unfragmented TCP and UDP, ports; the MAC
// addresses for anything else. Every frame of a flow hashes alike.
uint32_t flowHash(const uint8_t* frame, size_t frameBytes);

}  // namespace weft
