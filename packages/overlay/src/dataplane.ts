// What the overlay control plane asks of a data plane. Implemented by
// @weft/agent (kernel VXLAN and the userspace native addon) and by a
// recording fake for unit tests. Every method is idempotent: the control
// plane may repeat any call after a restart or a lost watch.

export interface NetworkSpec {
  id: string; // 64 hex
  name: string;
  vni: number; // 1..16777215
  /** CIDR of each subnet with its gateway address. */
  subnets: { subnet: string; gateway: string }[];
  /** Overlay MTU; undefined = underlay MTU - 50. */
  mtu?: number;
  /** No gateway bridge / NAT for internal networks. */
  internal: boolean;
}

export interface LocalEndpoint {
  networkId: string;
  endpointId: string;
  /** Name of the container's network namespace (`ip netns` name). */
  sandbox: string;
  /** Interface name inside the container, e.g. eth0, eth1. */
  ifName: string;
  ip: string;
  prefixLength: number;
  mac: string; // 02:42:xx:xx:xx:xx
  gateway: string;
}

export interface RemotePeer {
  networkId: string;
  endpointId: string;
  ip: string;
  mac: string;
  /** Underlay address of the host that holds the endpoint. */
  vtep: string;
}

export interface DataplaneCounters {
  [networkId: string]: {
    txPackets: number;
    txBytes: number;
    rxPackets: number;
    rxBytes: number;
    drops: Record<string, number>;
  };
}

export interface Dataplane {
  start(): Promise<void>;
  /** Leaves nothing behind: every device, route and rule this data plane made. */
  stop(): Promise<void>;
  ensureNetwork(net: NetworkSpec): Promise<void>;
  removeNetwork(networkId: string): Promise<void>;
  attach(ep: LocalEndpoint): Promise<void>;
  detach(ep: Pick<LocalEndpoint, 'networkId' | 'endpointId' | 'sandbox' | 'ifName'>): Promise<void>;
  addPeer(peer: RemotePeer): Promise<void>;
  removePeer(peer: RemotePeer): Promise<void>;
  /** Make the devices match exactly this state (after a restart or a lost watch). */
  reconcile(state: {
    networks: NetworkSpec[];
    endpoints: LocalEndpoint[];
    peers: RemotePeer[];
  }): Promise<void>;
  counters(): Promise<DataplaneCounters>;
}
