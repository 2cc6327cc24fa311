// What the overlay keeps in the store, and where (DESIGN.md "State layout").
//
//   hosts/<hostname>                   HostRecord, held by the host's TTL session
//   networks/<id>                      NetworkRecord
//   network-names/<name>               <id>          create-only: names are unique
//   network-epoch                      counter       bumped (cas) by every network
//                                                    create, so subnet/VNI choices serialize
//   vni/<vni>                          <network id>  create-only
//   ipam/<network id>/<ip>             <endpoint id> create-only: an IP is never given twice
//   endpoints/<network id>/<ep id>     EndpointRecord
//   endpoint-names/<network id>/<name> <ep id>       create-only: names unique per network
import type { IpamSubnet } from './ipam.js';
import type { KvEntry } from './kvstore.js';

export const defaultKeyPrefix = 'weft/v1/';

export interface HostRecord {
  name: string;
  /** Address other agents use to reach this host's agent. */
  advertise: string;
  /** Underlay address VXLAN packets for this host's endpoints are sent to. */
  vtep: string;
  peerId: string;
  /** Store session that holds this record; the host is alive while it lives. */
  session: string;
}

export interface NetworkOptions {
  /** Overlay MTU in bytes; unset = underlay MTU − 50 (decided by the data plane). */
  mtu?: number;
  /** No route out of the overlay (no gateway bridge / NAT). */
  internal: boolean;
  /** Standalone containers may attach (kept for Docker parity; Weft attaches anything). */
  attachable: boolean;
}

export interface NetworkRecord {
  id: string;
  name: string;
  driver: 'overlay';
  vni: number;
  ipam: { driver: 'default'; config: IpamSubnet[] };
  options: NetworkOptions;
  labels: Record<string, string>;
  /** ISO 8601. */
  created: string;
  /** Set while a removal is in progress: attaches are refused from then on. */
  removing?: boolean;
}

export interface EndpointRecord {
  id: string;
  networkId: string;
  name: string;
  aliases: string[];
  ip: string;
  mac: string;
  /** Hostname of the host that holds the endpoint. */
  host: string;
  /** The host's session when the endpoint was made; another session means the endpoint is orphaned. */
  hostSession: string;
  /** Container the endpoint belongs to (groups a container's endpoints for DNS). */
  container?: string;
  /** Network namespace name and interface inside it, when the data plane should plumb it. */
  sandbox?: string;
  ifName?: string;
  /** ISO 8601. */
  created: string;
}

export class Keys {
  constructor(readonly prefix: string = defaultKeyPrefix) {}
  host = (name: string) => `${this.prefix}hosts/${name}`;
  hostsPrefix = () => `${this.prefix}hosts/`;
  network = (id: string) => `${this.prefix}networks/${id}`;
  networksPrefix = () => `${this.prefix}networks/`;
  networkName = (name: string) => `${this.prefix}network-names/${name}`;
  networkEpoch = () => `${this.prefix}network-epoch`;
  vni = (vni: number) => `${this.prefix}vni/${vni}`;
  ipam = (networkId: string, ip: string) => `${this.prefix}ipam/${networkId}/${ip}`;
  ipamPrefix = (networkId: string) => `${this.prefix}ipam/${networkId}/`;
  endpoint = (networkId: string, id: string) => `${this.prefix}endpoints/${networkId}/${id}`;
  endpointsPrefix = (networkId?: string) =>
    `${this.prefix}endpoints/${networkId === undefined ? '' : `${networkId}/`}`;
  endpointName = (networkId: string, name: string) => `${this.prefix}endpoint-names/${networkId}/${name}`;
  endpointNamesPrefix = (networkId: string) => `${this.prefix}endpoint-names/${networkId}/`;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

export function encodeText(value: string): Uint8Array {
  return encoder.encode(value);
}

export function decodeText(e: KvEntry): string {
  return decoder.decode(e.value);
}

/** Parses a stored JSON record; undefined (and the caller skips it) if someone wrote garbage. */
export function decodeJson<T>(e: KvEntry): T | undefined {
  try {
    const v = JSON.parse(decoder.decode(e.value)) as unknown;
    return v !== null && typeof v === 'object' ? (v as T) : undefined;
  } catch {
    return undefined;
  }
}

/** Names usable as keys and DNS labels: Docker's container/network name rule. */
export const namePattern = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;
export const hostnamePattern = /^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?$/;
