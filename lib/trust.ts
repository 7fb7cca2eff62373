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

/** Validates one entry the way compileTrust will read it. */
export function isValidTrustEntry(entry: string): boolean {
  try {
    compileTrust([entry]);
    return true;
  } catch {
    return false;
  }
}
