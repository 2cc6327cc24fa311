// A Dataplane that records every call and keeps the state those calls imply,
// for unit tests of the control plane. It can be told to fail calls, to test
// that the control plane retries and rolls back.
import type { Dataplane, DataplaneCounters, LocalEndpoint, NetworkSpec, RemotePeer } from '../dataplane.js';

export type RecordedCall =
  | { op: 'start' | 'stop' }
  | { op: 'ensureNetwork'; net: NetworkSpec }
  | { op: 'removeNetwork'; networkId: string }
  | { op: 'attach'; ep: LocalEndpoint }
  | { op: 'detach'; ep: Pick<LocalEndpoint, 'networkId' | 'endpointId' | 'sandbox' | 'ifName'> }
  | { op: 'addPeer' | 'removePeer'; peer: RemotePeer }
  | { op: 'reconcile'; state: { networks: NetworkSpec[]; endpoints: LocalEndpoint[]; peers: RemotePeer[] } };

export class RecordingDataplane implements Dataplane {
  readonly calls: RecordedCall[] = [];
  readonly networks = new Map<string, NetworkSpec>();
  readonly endpoints = new Map<string, LocalEndpoint>();
  readonly peers = new Map<string, RemotePeer>();
  /** Return an Error to make the matching call fail. */
  failWhen: ((call: RecordedCall) => Error | undefined) | undefined;

  private record(call: RecordedCall): void {
    this.calls.push(structuredClone(call));
    const err = this.failWhen?.(call);
    if (err) throw err;
  }

  async start(): Promise<void> {
    this.record({ op: 'start' });
  }
  async stop(): Promise<void> {
    this.record({ op: 'stop' });
    this.networks.clear();
    this.endpoints.clear();
    this.peers.clear();
  }
  async ensureNetwork(net: NetworkSpec): Promise<void> {
    this.record({ op: 'ensureNetwork', net });
    this.networks.set(net.id, structuredClone(net));
  }
  async removeNetwork(networkId: string): Promise<void> {
    this.record({ op: 'removeNetwork', networkId });
    this.networks.delete(networkId);
  }
  async attach(ep: LocalEndpoint): Promise<void> {
    this.record({ op: 'attach', ep });
    if (!this.networks.has(ep.networkId))
      throw new Error(`attach ${ep.endpointId}: network ${ep.networkId} was not ensured first`);
    this.endpoints.set(ep.endpointId, structuredClone(ep));
  }
  async detach(ep: Pick<LocalEndpoint, 'networkId' | 'endpointId' | 'sandbox' | 'ifName'>): Promise<void> {
    this.record({ op: 'detach', ep });
    this.endpoints.delete(ep.endpointId);
  }
  async addPeer(peer: RemotePeer): Promise<void> {
    this.record({ op: 'addPeer', peer });
    if (!this.networks.has(peer.networkId))
      throw new Error(`addPeer ${peer.ip}: network ${peer.networkId} was not ensured first`);
    this.peers.set(peer.endpointId, structuredClone(peer));
  }
  async removePeer(peer: RemotePeer): Promise<void> {
    this.record({ op: 'removePeer', peer });
    this.peers.delete(peer.endpointId);
  }
  async reconcile(state: {
    networks: NetworkSpec[];
    endpoints: LocalEndpoint[];
    peers: RemotePeer[];
  }): Promise<void> {
    this.record({ op: 'reconcile', state });
    this.networks.clear();
    this.endpoints.clear();
    this.peers.clear();
    for (const n of state.networks) this.networks.set(n.id, structuredClone(n));
    for (const e of state.endpoints) this.endpoints.set(e.endpointId, structuredClone(e));
    for (const p of state.peers) this.peers.set(p.endpointId, structuredClone(p));
  }
  async counters(): Promise<DataplaneCounters> {
    const out: DataplaneCounters = {};
    for (const id of this.networks.keys())
      out[id] = { txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, drops: {} };
    return out;
  }

  /** Peer IPs programmed for a network, sorted. */
  peerIps(networkId: string): string[] {
    return [...this.peers.values()]
      .filter((p) => p.networkId === networkId)
      .map((p) => p.ip)
      .sort();
  }
}
