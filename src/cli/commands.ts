/**
 * The command registry: one line per top-level command. Each command lives
 * in its own thin file under src/cli/.
 */
import type { Command } from './command.js';
import { versionCommand } from './version.js';
import { netCommand } from './net.js';
import { exposeCommand } from './expose.js';
import { unexposeCommand } from './unexpose.js';

export const commands: Command[] = [
  versionCommand,
  netCommand,
  exposeCommand,
  unexposeCommand,
];
