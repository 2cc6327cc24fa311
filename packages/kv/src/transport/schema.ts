// Generated from raft.proto (WEFT_UPDATE_PROTO_SCHEMA=1 when running test/transport/codec.test). Do not edit.
// Embedded so the compiled package needs no .proto file at run time (tsc does not copy it).
export const RAFT_PROTO_SCHEMA = `// Wire format of Weft's Raft transport (@weft/kv). Mirrors src/raft/types.ts;
// change both together. The schema is embedded in schema.ts (kept identical to
// this file by test/transport/codec.test.ts; regenerate with
// WEFT_UPDATE_PROTO_SCHEMA=1) so the compiled package needs no .proto at run time.
syntax = "proto3";

package weft.raft;

enum EntryType {
  ENTRY_NORMAL = 0;
  ENTRY_CONF_CHANGE = 1;
}

message Entry {
  uint64 term = 1;
  uint64 index = 2;
  EntryType type = 3;
  bytes data = 4;
}

message ConfState {
  repeated string voters = 1;
  repeated string learners = 2;
  repeated string voters_outgoing = 3;
  repeated string learners_next = 4;
  bool auto_leave = 5;
}

message SnapshotMetadata {
  uint64 index = 1;
  uint64 term = 2;
  ConfState conf_state = 3;
}

message Snapshot {
  SnapshotMetadata metadata = 1;
  bytes data = 2;
}

enum MessageType {
  MSG_HUP = 0;
  MSG_BEAT = 1;
  MSG_PROP = 2;
  MSG_APP = 3;
  MSG_APP_RESP = 4;
  MSG_VOTE = 5;
  MSG_VOTE_RESP = 6;
  MSG_PRE_VOTE = 7;
  MSG_PRE_VOTE_RESP = 8;
  MSG_SNAP = 9;
  MSG_HEARTBEAT = 10;
  MSG_HEARTBEAT_RESP = 11;
  MSG_UNREACHABLE = 12;
  MSG_SNAP_STATUS = 13;
  MSG_CHECK_QUORUM = 14;
  MSG_TRANSFER_LEADER = 15;
  MSG_TIMEOUT_NOW = 16;
  MSG_READ_INDEX = 17;
  MSG_READ_INDEX_RESP = 18;
}

message Message {
  MessageType type = 1;
  string from = 2;
  string to = 3;
  uint64 term = 4;
  uint64 log_term = 5;
  uint64 index = 6;
  repeated Entry entries = 7;
  uint64 commit = 8;
  bool reject = 9;
  uint64 reject_hint = 10;
  Snapshot snapshot = 11;
  bytes context = 12;
}

// Every frame on the wire is an Envelope: a version, the encoded payload and a
// CRC-32 of it. The CRC is the last field, so a frame cut short anywhere is
// rejected instead of decoding into a message with fields missing.
message Envelope {
  uint32 version = 1;
  bytes payload = 2;
  // optional: a CRC that happens to be 0 must still be on the wire (proto3 omits zero scalars).
  optional fixed32 crc32 = 3;
}

// First exchange on a new connection (protocol /weft/raft/hello/1.0.0): each
// side says which cluster and which Raft node it is, so that peers given as
// plain host:port learn each other's NodeId and peer ID.
message Hello {
  string cluster = 1;
  string node_id = 2;
  string peer_id = 3;
  repeated string multiaddrs = 4;
  // The sender's address book, so a node that knows one peer learns every
  // member's peer id (and can then find it through the DHT).
  repeated Member members = 5;
}

message Member {
  string node_id = 1;
  string peer_id = 2;
  repeated string multiaddrs = 3;
}

message HelloReply {
  bool ok = 1;
  // Why the hello was refused (ok = false), for the dialer's log.
  string error = 2;
  Hello hello = 3;
}

// Snapshot transfer (protocol /weft/raft/snapshot/1.0.0): one header, then
// chunks until total_bytes have been sent; the receiver answers one SnapshotAck
// after reassembling and delivering the message.
message SnapshotHeader {
  // The Snap message with snapshot.data left empty; the data follows in chunks.
  Message message = 1;
  uint64 total_bytes = 2;
  optional fixed32 data_crc32 = 3;
}

message SnapshotAck {
  bool ok = 1;
  string error = 2;
}

// Request/response channel for the node's own RPCs (protocol /weft/rpc/1.0.0).
message RpcRequest {
  string protocol = 1;
  bytes payload = 2;
}

message RpcResponse {
  bool ok = 1;
  string error = 2;
  bytes payload = 3;
  // On failure: "no-handler" (nobody serves the protocol) or "remote-error" (the handler threw).
  string code = 4;
}
`;
