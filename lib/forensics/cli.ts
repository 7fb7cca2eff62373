import { resolveInputs, UsageError } from './inputs';
import type { Input } from './inputs';
import { enableReclaim } from './memory';
import { Progress } from './progress';
import type { ReadEvents } from './read';
import { formatNotFound, trail } from './trail';
import { formatTrail } from './tree';
import { formatVerify, verify } from './verify';

/** `auditrace trail|verify`: argument parsing, inputs, output and exit codes. */

export const USAGE = `usage:
  auditrace trail <request-id | trace-id | audit-id> [--archive DIR]... [--file F]... [--json]
      The path of one request through the services, as a tree ordered by time: each service and
      instance, its spans, the audit records written in them, client and peer addresses, users,
      errors and durations. Without a match: the nearest request ids by time.
  auditrace verify [--archive DIR]... [--file F]... [--key-env VAR] [--live] [--json] [--workers N]
      Recompute every audit hash chain: report each deleted, inserted, modified or reordered
      record, a chain whose start, tail or end is missing, and every checkpoint MAC that fails,
      with file and line.

inputs (at least one, each repeatable):
  --file F        a local audit file (with its rotated F.1, F.2, ...) or a directory of *.jsonl files
  --archive DIR   the gateway archive: a directory of audit.jsonl.zst* / traces.jsonl.zst* (zstd or
                  plain), or one such file
options:
  --json          machine-readable output on stdout
  --key-env VAR   verify: the environment variable holding the HMAC key
                  (default AUDITRACE_AUDIT_HMAC_KEY; the key is never printed)
  --live          verify: the newest chain of each instance may be open if its last checkpoint
                  (else its start) is within 2 x its interval of now, not ahead of it; with a key,
                  only a checkpoint or start whose MAC verifies counts
  --workers N     verify: worker threads (default: by input size and CPUs; 0: none)
  -h, --help      this text

exit status: 0 found / intact, 1 not found / not intact, 2 usage error (or unreadable input)
`;

interface Args {
  command: 'trail' | 'verify';
  id?: string;
  files: string[];
  archives: string[];
  json: boolean;
  keyEnv: string;
  keyEnvGiven: boolean;
  live: boolean;
  workers?: number;
}

function parseArgs(argv: readonly string[]): Args | 'help' {
  if (argv.length === 0) throw new UsageError('a command is required: trail or verify');
  if (argv.includes('-h') || argv.includes('--help') || argv[0] === 'help') return 'help';
  const [command, ...rest] = argv;
  if (command !== 'trail' && command !== 'verify') throw new UsageError(`unknown command ${JSON.stringify(command)}: trail or verify`);
  const a: Args = { command, files: [], archives: [], json: false, keyEnv: 'AUDITRACE_AUDIT_HMAC_KEY', keyEnvGiven: false, live: false };
  const positional: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    let arg = rest[i]!;
    let value: string | undefined;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    if (eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const need = (): string => {
      if (value !== undefined) return value;
      const v = rest[++i];
      if (v === undefined || v === '') throw new UsageError(`${arg} needs a value`);
      return v;
    };
    switch (arg) {
      case '--file': a.files.push(need()); break;
      case '--archive': a.archives.push(need()); break;
      case '--json': a.json = true; break;
      case '--live': if (command !== 'verify') throw new UsageError('--live is an option of verify'); a.live = true; break;
      case '--key-env': {
        if (command !== 'verify') throw new UsageError('--key-env is an option of verify');
        a.keyEnv = need();
        a.keyEnvGiven = true;
        break;
      }
      case '--workers': {
        if (command !== 'verify') throw new UsageError('--workers is an option of verify');
        const v = need();
        if (!/^\d+$/.test(v) || Number(v) > 64) throw new UsageError(`--workers ${v}: expected a number from 0 to 64`);
        a.workers = Number(v);
        break;
      }
      case '--': positional.push(...rest.slice(i + 1)); i = rest.length; break;
      default:
        if (arg.startsWith('-') && arg !== '-') throw new UsageError(`unknown option ${arg}`);
        positional.push(arg);
    }
  }
  if (command === 'trail') {
    if (positional.length !== 1) throw new UsageError(positional.length === 0 ? 'trail needs an id: a request id, trace id or audit id' : `trail takes one id, got ${positional.length}`);
    a.id = positional[0]!;
    if (a.id.length === 0 || a.id.length > 256) throw new UsageError('the id must be 1 to 256 characters');
  } else if (positional.length > 0) {
    throw new UsageError(`verify takes no positional argument (got ${JSON.stringify(positional[0])}): use --file or --archive`);
  }
  if (a.files.length === 0 && a.archives.length === 0) throw new UsageError('no input: give --file and/or --archive');
  return a;
}

function readKey(a: Args, env: NodeJS.ProcessEnv): Buffer | undefined {
  const v = env[a.keyEnv];
  if (v === undefined || v === '') {
    if (a.keyEnvGiven) throw new UsageError(`--key-env ${a.keyEnv}: the variable is not set`);
    return undefined;
  }
  if (v.length < 16) {
    // Named by its length only: the value is a secret.
    throw new UsageError(`${a.keyEnv} holds ${v.length} characters: auditrace uses only keys of at least 16 (a shorter one was never used to write a chain)`);
  }
  return Buffer.from(v, 'utf8');
}

/**
 * Text for a terminal: records carry what clients sent (paths, user agents, ids), so control and
 * bidirectional-override characters are shown escaped, never interpreted by the terminal.
 */
export function terminalSafe(text: string): string {
  return text.replace(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export interface Io {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WriteStream;
  env: NodeJS.ProcessEnv;
}

export async function main(argv: readonly string[], io: Io = { stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  const err = (s: string): void => { io.stderr.write(s.endsWith('\n') ? s : `${s}\n`); };
  let args: Args | 'help';
  let inputs: Input[];
  let key: Buffer | undefined;
  try {
    args = parseArgs(argv);
    if (args === 'help') {
      io.stdout.write(USAGE);
      return 0;
    }
    inputs = resolveInputs(args.files, args.archives);
    if (inputs.length === 0) throw new UsageError('the inputs hold no file');
    if (args.command === 'verify') key = readKey(args, io.env);
  } catch (e) {
    if (e instanceof UsageError) {
      err(`auditrace: ${e.message}`);
      err('usage: auditrace trail <id> | verify  [--file F]... [--archive DIR]... (auditrace --help)');
      return 2;
    }
    err(`auditrace: ${(e as Error).message}`);
    return 2;
  }
  enableReclaim();
  const progress = new Progress(inputs.reduce((s, i) => s + i.size, 0), io.stderr);
  let problems = 0;
  const events: ReadEvents = {
    problem: (_input, message) => {
      problems++;
      progress.clear();
      if (problems <= 1000) err(terminalSafe(message));
      else if (problems === 1001) err('auditrace: more than 1000 input problems; the rest are not printed');
    },
    progress: (n) => progress.advance(n),
    phase: (name, bytes) => progress.phase(name, bytes),
  };
  try {
    if (args.command === 'trail') {
      const r = await trail({ id: args.id!, inputs, events });
      progress.clear();
      io.stdout.write(args.json ? `${JSON.stringify(r, null, 2)}\n` : terminalSafe(r.found ? formatTrail(r) : formatNotFound(r)));
      return r.found ? 0 : 1;
    }
    const r = await verify({ inputs, key, keyEnv: args.keyEnv, live: args.live, workers: args.workers, events });
    progress.clear();
    io.stdout.write(args.json ? `${JSON.stringify(r, null, 2)}\n` : terminalSafe(formatVerify(r)));
    return r.ok ? 0 : 1;
  } catch (e) {
    progress.clear();
    const er = e as NodeJS.ErrnoException;
    err(`auditrace: ${er.code ? `${er.code}: ` : ''}${er.message}`);
    return 2;
  }
}
