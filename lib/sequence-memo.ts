/**
 * A value computed once per sequence of strings (an object's keys, a request's mount paths), found
 * again by walking a trie one string per level: no key is built per lookup, and no two sequences
 * can collide as joined strings can. Past `maxNodes` nodes nothing new is kept and the value is
 * computed each time, so a caller whose sequences come from outside cannot grow it without bound.
 */
export interface SequenceMemo<T> {
  get(sequence: readonly string[]): T;
  /** Nodes held (at most `maxNodes`). */
  readonly size: number;
}

interface Node<T> {
  next: Map<string, Node<T>> | undefined;
  value: T | undefined;
}

export function sequenceMemo<T>(maxNodes: number, make: (sequence: readonly string[]) => T): SequenceMemo<T> {
  const root: Node<T> = { next: undefined, value: undefined };
  let size = 0;
  return {
    get(sequence: readonly string[]): T {
      let node = root;
      for (let i = 0; i < sequence.length; i++) {
        const s = sequence[i]!;
        let child = node.next?.get(s);
        if (child === undefined) {
          if (size >= maxNodes) return make(sequence);
          child = { next: undefined, value: undefined };
          (node.next ??= new Map()).set(s, child);
          size++;
        }
        node = child;
      }
      return (node.value ??= make(sequence));
    },
    get size(): number {
      return size;
    },
  };
}
