// The local, read-only picture of the cluster, rebuilt from each watch listing
// of the whole `weft/v1/` prefix. Every local read (list, inspect, DNS, peer
// table) is answered from here, so a slow store or one without quorum never
// blocks them.
import { OverlayError } from './errors.js';
import type { KvEntry } from './kvstore.js';
import {
  decodeJson,
  decodeText,
  type EndpointRecord,
  type HostRecord,
  type Keys,
  type NetworkRecord,
} from './records.js';

export interface Stored<T> {
  record: T;
  key: string;
  modifyIndex: number;
}

export interface StoredValue {
  value: string;
  key: string;
  modifyIndex: number;
}

const idPattern = /^[0-9a-f]{64}$/;

export class ClusterView {
  readonly hosts = new Map<string, Stored<HostRecord>>();
  readonly networks = new Map<string, Stored<NetworkRecord>>();
  /** By endpoint id. */
  readonly endpoints = new Map<string, Stored<EndpointRecord>>();
  /** By `<network id>/<ip>`. */
  readonly ipam = new Map<string, StoredValue>();
  /** By `<network id>/<name>`. */
  readonly endpointNames = new Map<string, StoredValue>();
  /** Keys that did not decode; reported once per index so operators can fix them. */
  readonly malformedKeys: string[] = [];

  private constructor(readonly index: number) {}

  static empty(): ClusterView {
    return new ClusterView(0);
  }

  /**
   * Decodes a listing. Records whose ModifyIndex did not change since
   * `previous` are reused rather than parsed again.
   */
  static build(keys: Keys, index: number, entries: KvEntry[], previous?: ClusterView): ClusterView {
    const v = new ClusterView(index);
    const prevRecord = <T>(
      map: Map<string, Stored<T>> | undefined,
      id: string,
      e: KvEntry,
    ): T | undefined => {
      const p = map?.get(id);
      return p && p.modifyIndex === e.modifyIndex && p.key === e.key ? p.record : undefined;
    };
    const p = keys.prefix;
    for (const e of entries) {
      if (!e.key.startsWith(p)) continue;
      const rest = e.key.slice(p.length);
      const slash = rest.indexOf('/');
      const kind = slash < 0 ? rest : rest.slice(0, slash);
      const tail = slash < 0 ? '' : rest.slice(slash + 1);
      switch (kind) {
        case 'hosts': {
          const rec = prevRecord(previous?.hosts, tail, e) ?? decodeJson<HostRecord>(e);
          if (rec && typeof rec.name === 'string')
            v.hosts.set(tail, { record: rec, key: e.key, modifyIndex: e.modifyIndex });
          else v.malformedKeys.push(e.key);
          break;
        }
        case 'networks': {
          const rec = prevRecord(previous?.networks, tail, e) ?? decodeJson<NetworkRecord>(e);
          if (rec && idPattern.test(rec.id ?? '') && Array.isArray(rec.ipam?.config)) {
            v.networks.set(rec.id, { record: rec, key: e.key, modifyIndex: e.modifyIndex });
          } else v.malformedKeys.push(e.key);
          break;
        }
        case 'endpoints': {
          const epId = tail.slice(tail.indexOf('/') + 1);
          const rec = prevRecord(previous?.endpoints, epId, e) ?? decodeJson<EndpointRecord>(e);
          if (rec && typeof rec.ip === 'string' && typeof rec.host === 'string') {
            v.endpoints.set(rec.id, { record: rec, key: e.key, modifyIndex: e.modifyIndex });
          } else v.malformedKeys.push(e.key);
          break;
        }
        case 'ipam':
          v.ipam.set(tail, { value: decodeText(e), key: e.key, modifyIndex: e.modifyIndex });
          break;
        case 'endpoint-names':
          v.endpointNames.set(tail, { value: decodeText(e), key: e.key, modifyIndex: e.modifyIndex });
          break;
        default:
          break;
      }
    }
    return v;
  }

  /** The endpoint's host is registered with the session the endpoint was made under. */
  isLive(ep: EndpointRecord): boolean {
    return this.hosts.get(ep.host)?.record.session === ep.hostSession;
  }

  /** Endpoints whose host died (session gone) or re-registered under a new session. */
  orphans(): Stored<EndpointRecord>[] {
    return [...this.endpoints.values()].filter((e) => !this.isLive(e.record));
  }

  endpointsOf(networkId: string): EndpointRecord[] {
    const out: EndpointRecord[] = [];
    for (const e of this.endpoints.values()) if (e.record.networkId === networkId) out.push(e.record);
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Docker's lookup order: full ID, then exact name, then unique ID prefix. */
  findNetwork(ref: string): NetworkRecord {
    return resolveNetwork(
      [...this.networks.values()].map((s) => s.record),
      ref,
    );
  }
}

export function resolveNetwork(networks: NetworkRecord[], ref: string): NetworkRecord {
  const byId = networks.find((n) => n.id === ref);
  if (byId) return byId;
  const byName = networks.find((n) => n.name === ref);
  if (byName) return byName;
  if (/^[0-9a-f]+$/.test(ref)) {
    const matches = networks.filter((n) => n.id.startsWith(ref));
    if (matches.length === 1) return matches[0];
    if (matches.length > 1) {
      throw new OverlayError(
        'invalid',
        `network "${ref}" is ambiguous (${matches.length} networks have IDs starting with it); use more of the ID`,
      );
    }
  }
  throw new OverlayError('not-found', `network "${ref}" not found (by ID, name or ID prefix)`);
}

/** Endpoint by ID, name, or unique ID prefix, within one network. */
export function resolveEndpoint(
  endpoints: EndpointRecord[],
  ref: string,
  networkName: string,
): EndpointRecord {
  const exact = endpoints.find((e) => e.id === ref) ?? endpoints.find((e) => e.name === ref);
  if (exact) return exact;
  if (/^[0-9a-f]+$/.test(ref)) {
    const matches = endpoints.filter((e) => e.id.startsWith(ref));
    if (matches.length === 1) return matches[0];
    if (matches.length > 1)
      throw new OverlayError(
        'invalid',
        `endpoint "${ref}" is ambiguous in network "${networkName}"; use more of the ID`,
      );
  }
  throw new OverlayError('not-found', `endpoint "${ref}" not found in network "${networkName}"`);
}
