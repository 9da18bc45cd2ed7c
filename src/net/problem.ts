/** A problem found by `net doctor`: stable id, what is wrong, the exact fix. */
export interface Problem {
  id: string;
  message: string;
  fix: string;
}
