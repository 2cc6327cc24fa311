// Runs a transcript scenario: a text file of commands against a Harness,
// producing a readable trace (every delivered message and every notable
// state change). Golden tests compare that trace with a file beside it.
//
// Commands (one per line; '#' starts a comment):
//   cluster n1 n2 n3 [prevote] [checkquorum] [max-inflight=N] [max-size=BYTES]
//   campaign ID                 start an election at ID
//   tick ID [N]                 N ticks (default 1) on one node
//   tick-all [N]                N ticks on every node
//   stabilize                   process and deliver until quiet
//   advance N                   N rounds of (tick every node; stabilize)
//   hide-heartbeats             leave heartbeat messages out of the trace
//   deliver [ID]                deliver queued messages (only those to ID)
//   process ID                  handle ID's Ready (persist, queue messages, apply)
//   propose ID DATA             propose DATA at ID
//   conf ID CHANGE... [joint|explicit]   propose a conf change: vN (add voter),
//                               lN (add learner), rN (remove); leave-joint
//   add-node ID                 start an empty node (to be added by conf)
//   isolate ID | cut A B | heal
//   crash ID | restart ID
//   compact ID                  snapshot at the applied index and compact
//   transfer ID TARGET          ask ID to transfer leadership to TARGET
//   read ID CTX                 ReadIndex at ID
//   status                      one line per node
//   log ID                      ID's log entries
import { describeEntry } from '../../src/raft/describe.js';
import { RequestDroppedError } from '../../src/raft/errors.js';
import {
  type ConfChange,
  type ConfChangeSingle,
  ConfChangeTransition,
  ConfChangeType,
  Role,
} from '../../src/raft/types.js';
import { Harness } from './harness.js';

export function runScenario(text: string): string {
  const out: string[] = [];
  let h: Harness | undefined;
  const need = (): Harness => {
    if (!h) throw new Error('the scenario must start with "cluster ..."');
    return h;
  };
  let lineNo = 0;
  for (const rawLine of text.split('\n')) {
    lineNo++;
    const line = rawLine.replace(/#.*/, '').trim();
    if (rawLine.trim().startsWith('#')) {
      out.push(rawLine.trim());
      continue;
    }
    if (line === '') continue;
    out.push(`> ${line}`);
    const [cmd, ...args] = line.split(/\s+/);
    const before = h ? h.trace.length : 0;
    try {
      switch (cmd) {
        case 'cluster': {
          const ids = args.filter((a) => /^n\d+$/.test(a));
          const opt = (name: string): string | undefined =>
            args.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
          h = new Harness(ids, {
            preVote: args.includes('prevote'),
            checkQuorum: args.includes('checkquorum'),
            maxInflightMsgs: Number(opt('max-inflight') ?? 256),
            maxSizePerMsgBytes: Number(opt('max-size') ?? 1 << 20),
          });
          break;
        }
        case 'campaign':
          need().node(args[0]!).raw.campaign();
          break;
        case 'tick':
          need().tick(args[0]!, Number(args[1] ?? 1));
          break;
        case 'tick-all':
          for (let i = 0; i < Number(args[0] ?? 1); i++)
            for (const id of [...need().nodes.keys()].sort()) need().tick(id);
          break;
        case 'advance':
          // N rounds of: every node ticks once, then the cluster stabilizes.
          for (let i = 0; i < Number(args[0] ?? 1); i++) {
            for (const id of [...need().nodes.keys()].sort()) need().tick(id);
            need().stabilize();
          }
          break;
        case 'hide-heartbeats':
          need().hideHeartbeats = true;
          break;
        case 'stabilize':
          need().stabilize();
          break;
        case 'deliver':
          need().deliver(args[0] ? (m) => m.to === args[0] : undefined);
          break;
        case 'process':
          need().process(args[0]!);
          break;
        case 'propose':
          need().propose(args[0]!, args.slice(1).join(' '));
          break;
        case 'conf': {
          const changes: ConfChangeSingle[] = [];
          let transition = ConfChangeTransition.Auto;
          for (const a of args.slice(1)) {
            if (a === 'joint') transition = ConfChangeTransition.JointImplicit;
            else if (a === 'explicit') transition = ConfChangeTransition.JointExplicit;
            else if (a === 'leave-joint') continue;
            else {
              const type = {
                v: ConfChangeType.AddVoter,
                l: ConfChangeType.AddLearner,
                r: ConfChangeType.RemoveNode,
              }[a[0]!];
              if (type === undefined) throw new Error(`bad change "${a}"`);
              changes.push({ type, nodeId: a.slice(1) });
            }
          }
          const cc: ConfChange = { transition, changes, context: new Uint8Array(0) };
          need().node(args[0]!).raw.proposeConfChange(cc);
          break;
        }
        case 'add-node':
          need().addNode(args[0]!);
          break;
        case 'isolate':
          need().isolate(args[0]!);
          break;
        case 'cut':
          need().cut.add(`${args[0]}->${args[1]}`);
          break;
        case 'heal':
          need().heal();
          break;
        case 'crash':
          need().crash(args[0]!);
          break;
        case 'restart':
          need().restart(args[0]!);
          break;
        case 'compact':
          out.push(`${args[0]} compacted through ${need().compact(args[0]!)}`);
          break;
        case 'transfer':
          need().node(args[0]!).raw.transferLeadership(args[1]!);
          break;
        case 'read':
          need().node(args[0]!).raw.readIndex(new TextEncoder().encode(args[1]!));
          break;
        case 'status':
          for (const n of [...need().nodes.values()].sort((a, b) => a.id.localeCompare(b.id))) {
            const st = n.raw.status();
            const cs = st.confState;
            let conf = `voters=(${cs.voters.join(' ')})`;
            if (cs.votersOutgoing.length > 0) conf += `&&(${cs.votersOutgoing.join(' ')})`;
            if (cs.learners.length > 0) conf += ` learners=(${cs.learners.join(' ')})`;
            const reads = n.readStates.map((r) => `${new TextDecoder().decode(r.requestCtx)}@${r.index}`);
            out.push(
              `${n.id}: ${Role[st.role]} term=${st.term} lead=${st.leader || '-'} commit=${st.commit} applied=${st.applied} ` +
                `last=${st.lastIndex} ${conf} applied-data=[${n.applied.join(',')}]${reads.length ? ` reads=[${reads.join(',')}]` : ''}`,
            );
          }
          for (const id of [...need().crashed.keys()].sort()) out.push(`${id}: down`);
          break;
        case 'log': {
          const n = need().node(args[0]!);
          const st = n.raw.status();
          const core = n.raw.core;
          const ents =
            st.lastIndex >= st.firstIndex ? core.log.slice(st.firstIndex, st.lastIndex + 1, 1 << 30) : [];
          out.push(
            `${args[0]} log (first ${st.firstIndex}): ${ents.map(describeEntry).join(', ') || '(empty)'}`,
          );
          break;
        }
        default:
          throw new Error(`unknown command "${cmd}"`);
      }
    } catch (err) {
      if (err instanceof RequestDroppedError) out.push(`error: ${err.message}`);
      else throw new Error(`line ${lineNo} (${line}): ${(err as Error).message}`);
    }
    if (h) for (const l of h.trace.slice(before)) out.push(`  ${l}`);
  }
  return `${out.join('\n')}\n`;
}
