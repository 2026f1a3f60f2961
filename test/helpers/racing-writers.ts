/** The racing writers of the state-race tests of both shard stores. */

/** A is a fenced zombie, B the partition's new owner; each tags its rows (model version) and its state. */
export const RACING_WRITERS = {
  'different ends': { A: [10, 20], B: [10, 30] },
  'the same range, different content': { A: [10, 20], B: [10, 20] },
} as const;
