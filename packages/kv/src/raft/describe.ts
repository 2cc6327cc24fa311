// Human-readable one-line renderings of messages and entries, used by traces,
// golden transcripts and error messages.
import { decodeConfChange, describeConfChange } from './confchange.js';
import { type Entry, EntryType, type Message, MessageType } from './types.js';

const textDecoder = new TextDecoder();

function printable(data: Uint8Array): string {
  if (data.byteLength === 0) return '';
  const s = textDecoder.decode(data.subarray(0, 40));
  const clean = /^[\x20-\x7e]*$/.test(s) ? s : Buffer.from(data.subarray(0, 20)).toString('hex');
  return data.byteLength > 40 ? `${clean}…` : clean;
}

export function describeEntry(e: Entry): string {
  if (e.type === EntryType.ConfChange) {
    let cc = '?';
    try {
      cc = describeConfChange(decodeConfChange(e.data));
    } catch {
      cc = 'undecodable';
    }
    return `${e.term}/${e.index} CC ${cc}`;
  }
  return `${e.term}/${e.index} ${e.data.byteLength === 0 ? 'EntryNormal ""' : JSON.stringify(printable(e.data))}`;
}

export function describeMessage(m: Message): string {
  let s = `${m.from}->${m.to} ${MessageType[m.type]} Term:${m.term} Log:${m.logTerm}/${m.index}`;
  if (m.reject) s += ` Rejected (Hint: ${m.rejectHint})`;
  if (m.commit !== 0) s += ` Commit:${m.commit}`;
  if (m.entries.length > 0) s += ` Entries:[${m.entries.map(describeEntry).join(', ')}]`;
  if (m.snapshot) {
    const md = m.snapshot.metadata;
    s += ` Snapshot: Index:${md.index} Term:${md.term} Voters:(${md.confState.voters.join(' ')})`;
    if (md.confState.votersOutgoing.length > 0) s += `&&(${md.confState.votersOutgoing.join(' ')})`;
    if (md.confState.learners.length > 0) s += ` Learners:(${md.confState.learners.join(' ')})`;
  }
  if (m.context.byteLength > 0) s += ` Context:${printable(m.context)}`;
  return s;
}
