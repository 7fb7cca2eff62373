import { isIP } from 'node:net';
import proxyAddr from 'proxy-addr';

/** Names accepted in AUDITRACE_TRUSTED_PROXIES besides CIDRs and addresses. */
const NAMED: Readonly<Record<string, readonly string[]>> = {
  loopback: ['loopback'],
  linklocal: ['linklocal'],
  uniquelocal: ['uniquelocal'],
  // RFC 1918 and the IPv6 unique-local range: "anything inside the private network".
  private: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'uniquelocal'],
};

export type Trust = (address: string) => boolean;

/** Compiles a trust list; throws a TypeError naming the bad entry. */
export function compileTrust(entries: readonly string[]): Trust {
  if (entries.length === 0) return () => false;
  const expanded = entries.flatMap((e) => NAMED[e.toLowerCase()] ?? [e]);
  const fn = proxyAddr.compile(expanded);
  return (address) => {
    try {
      return fn(address, 0);
    } catch {
      return false;
    }
  };
}

/**
 * Validates one entry the way compileTrust will read it, and in the form a person means it: an
 * address is a whole IPv4 dotted quad or an IPv6 address, a prefix a decimal length or a netmask. proxy-addr
 * (through ipaddr.js) also takes the old shorthands, so `10/8` would mean `0.0.0.10/8` and
 * `0x10` the address 0.0.0.16: a typo that silently trusts the wrong peers.
 */
export function isValidTrustEntry(entry: string): boolean {
  if (!Object.hasOwn(NAMED, entry.toLowerCase())) {
    const slash = entry.indexOf('/');
    const address = slash >= 0 ? entry.slice(0, slash) : entry;
    if (isIP(address) === 0) return false;
    const prefix = slash >= 0 ? entry.slice(slash + 1) : undefined;
    if (prefix !== undefined && !/^\d{1,3}$/.test(prefix) && isIP(prefix) !== 4) return false; // a length, or a netmask
  }
  try {
    compileTrust([entry]);
    return true;
  } catch {
    return false;
  }
}
