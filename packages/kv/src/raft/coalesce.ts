// Fewer, larger messages per Ready (RaftConfig.coalesceMessages).
//
// Under load a leader steps many proposals and acks between two Readies, and
// each one sends an append to every follower (bcastAppend): measured at
// concurrency 64, ~5 appends per follower per Ready carrying ~3 entries each,
// and a follower answered every one of them. Each message costs encoding,
// encryption, a frame and a syscall on both ends, and each ack another step at
// the leader. Merging what one Ready sends to one peer changes nothing the
// receiver can tell apart from a leader that had batched itself:
//   - consecutive appends to a peer, same term, the second continuing exactly
//     where the first ends: one append with both runs of entries and the later
//     (higher) commit index. Processing it equals processing the two in order.
//   - consecutive successful acks to a peer in the same term: only the highest
//     index is kept. An ack for a lower index says nothing the higher one does
//     not (match only grows; inflights are freed up to the index), and losing
//     it is an ordinary message loss Raft tolerates anyway.
// Only messages adjacent in the per-peer order are merged, so nothing is
// reordered relative to other messages to the same peer. Rejections are never
// merged (each carries its own hint). A merged append stays within
// maxSizePerMsgBytes.
import { entriesSizeBytes } from './log.js';
import { type Message, MessageType } from './types.js';

/** Merges what `msgs` sends to each peer as described above; returns a new array (messages merged into are copies). */
export function coalesceMessages(msgs: Message[], maxSizePerMsgBytes: number): Message[] {
  if (msgs.length < 2) return msgs;
  const out: Message[] = [];
  /**
   * Per peer: position in `out` of the last message to it, whether that is
   * already a private copy, whether its entries array is ours to push into,
   * and the size of its entries (counted once a merge needs it).
   */
  const lastTo = new Map<
    string,
    { at: number; copied: boolean; ownEntries: boolean; bytes: number | undefined }
  >();
  for (const m of msgs) {
    const prev = lastTo.get(m.to);
    const p = prev ? out[prev.at]! : undefined;
    if (prev && p && p.term === m.term && p.from === m.from) {
      if (m.type === MessageType.App && p.type === MessageType.App && continues(p, m)) {
        const bytes = entriesSizeBytes(m.entries);
        prev.bytes ??= entriesSizeBytes(p.entries);
        if (m.entries.length === 0 || prev.bytes + bytes <= maxSizePerMsgBytes) {
          const q = prev.copied ? p : { ...p };
          if (m.entries.length > 0) {
            // The first merge copies (the entries may be the log's own array); later ones append.
            if (prev.ownEntries) q.entries.push(...m.entries);
            else q.entries = p.entries.concat(m.entries);
            prev.ownEntries = true;
          }
          q.commit = Math.max(p.commit, m.commit);
          out[prev.at] = q;
          prev.copied = true;
          prev.bytes += bytes;
          continue;
        }
      } else if (m.type === MessageType.AppResp && p.type === MessageType.AppResp && !m.reject && !p.reject) {
        if (m.index > p.index) {
          const q = prev.copied ? p : { ...p };
          q.index = m.index;
          out[prev.at] = q;
          prev.copied = true;
        }
        continue;
      }
    }
    lastTo.set(m.to, { at: out.length, copied: false, ownEntries: false, bytes: undefined });
    out.push(m);
  }
  return out;
}

/** `m` appends right after the last entry `p` carries, on the same log (same preceding term). */
function continues(p: Message, m: Message): boolean {
  const pEnd = p.index + p.entries.length;
  const pEndTerm = p.entries.length > 0 ? p.entries[p.entries.length - 1]!.term : p.logTerm;
  return m.index === pEnd && m.logTerm === pEndTerm;
}
