/**
 * `nestvirt disable [--dry-run] [--persist] [--script] [--json]`: undoes
 * exactly what `nestvirt enable` recorded, or turns nesting off.
 */
import type { Command } from './command.js';
import { nestingFlags, runNesting } from './enable.js';

export const disableCommand: Command = {
  name: 'disable',
  summary: 'turn KVM nesting off again: undo exactly what `nestvirt enable` changed',
  usage: 'disable [--dry-run] [--persist] [--script] [--json] [--root DIR] [--module MODULE]',
  description: [
    'With a record of `nestvirt enable` (the ledger, owner `nesting`): reloads the module with',
    "the nested value it had before, and removes nestvirt's modprobe.d file (or restores the",
    'content it replaced). Without a record: reloads the module with nested=0 if nesting is on,',
    "and with --persist writes nestvirt's modprobe.d file with nested=0.",
    '',
    'examples:',
    '  nestvirt disable --dry-run               show what would be undone',
    '  sudo nestvirt disable',
    '',
    'exit codes: as for `nestvirt enable`.',
  ].join('\n'),
  flags: nestingFlags('disable'),
  positionals: [0, 0],
  run: (args, ctx) => runNesting('disable', args, ctx),
};
