/** A mistake the user can fix (a flag, a path): printed as one line, exit code 2. */
export class UserError extends Error {}
