// The embedded DNS server tells containers apart by the source address of a
// query (Docker's rule: a container sees the names of its own networks). A
// container reaches the server through its gateway veth, so queries arrive
// from its gateway-bridge address, not its overlay address. This book maps
// gateway addresses back to the container's overlay address before the
// lookup. It is refreshed after every attach/detach and on start.
import type { DnsLookup, DnsResolver, EndpointInfo } from '@weft/overlay';

export interface GatewayAddress {
  sandbox: string;
  ip: string;
}

export class DnsIdentityBook {
  private sandboxByGatewayIp = new Map<string, string>();

  constructor(
    private readonly readGatewayAddresses: () => Promise<GatewayAddress[]>,
    private readonly localEndpoints: () => EndpointInfo[],
  ) {}

  async refresh(): Promise<void> {
    const list = await this.readGatewayAddresses();
    this.sandboxByGatewayIp = new Map(list.map((g) => [g.ip, g.sandbox]));
  }

  /** The overlay address the name table knows the asker by. */
  translate(clientIp: string): string {
    const sandbox = this.sandboxByGatewayIp.get(clientIp);
    if (sandbox === undefined) return clientIp;
    const ep = this.localEndpoints().find((e) => e.sandbox === sandbox);
    return ep?.ip ?? clientIp;
  }

  /** Wraps a name table so lookups see the asker's overlay address. */
  wrap(table: DnsResolver): DnsResolver {
    return {
      lookupName: (clientIp: string, name: string): DnsLookup<string> =>
        table.lookupName(this.translate(clientIp), name),
      lookupAddress: (clientIp: string, ip: string): DnsLookup<string> =>
        table.lookupAddress(this.translate(clientIp), ip),
    };
  }
}
