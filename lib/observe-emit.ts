/**
 * Observing events Node emits on its own objects (a server's `clientError`, a TLS server's
 * `tlsClientError`) without listening to them: a listener would change what Node does (it answers
 * or destroys the socket only when nobody listens). The prototype's `emit` is wrapped instead; the
 * original is called with the same arguments and its value returned.
 */

export type Emit = (this: unknown, event: string | symbol, ...args: unknown[]) => boolean;
type Wrapped = Emit & { [mark: symbol]: true | undefined };

/**
 * Calls `observer(this, event, first, second)` (the event's first two arguments) before every
 * `emit` on instances of `proto`. Idempotent per
 * `mark` (another copy of auditrace that already observes is left alone). Returns an undo that
 * restores `emit` or, when something wrapped it after us, turns our wrapper into a pass-through.
 */
export function observeEmit(proto: { emit: Emit }, mark: symbol,
  observer: (target: unknown, event: string | symbol, first: unknown, second: unknown) => void): () => void {
  const current = proto.emit as Wrapped;
  if (current[mark]) return () => undefined;
  const hadOwn = Object.prototype.hasOwnProperty.call(proto, 'emit');
  const original = proto.emit;
  let active = true;
  // `arguments`, not rest parameters and a spread: every event of every such server passes here.
  const wrapped = function emit(this: unknown, event: string | symbol): boolean {
    // eslint-disable-next-line prefer-rest-params
    if (active) observer(this, event, arguments[1], arguments[2]);
    // eslint-disable-next-line prefer-rest-params
    return Reflect.apply(original, this, arguments) as boolean;
  } as Wrapped;
  wrapped[mark] = true;
  proto.emit = wrapped;
  return () => {
    active = false;
    if (proto.emit === wrapped) {
      if (hadOwn) proto.emit = original;
      else delete (proto as { emit?: Emit }).emit;
    }
  };
}
