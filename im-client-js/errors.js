// errors.js — ImError, what every promise of the client fails with (the
// client itself, and its attachment calls in files.js).

/**
 * Every failure of the client's promises. `kind` is one of:
 * `rejected` (the server refused: `code`, `serverMessage`; from the HTTP
 * calls of attachments also `status`), `body_too_large` (`len`, `max`),
 * `queue_full`, `stopped`, `timeout`, `disconnected`, `unexpected_reply`
 * (`frameType`), `invalid_argument`, and for attachments `not_signed_in`
 * (no token yet), `transport` (the request did not get through, or the
 * answer was garbled), `aborted` (its `signal` fired), `unsupported` (no
 * fetch, or no WebCrypto for a presigned upload's hash).
 */
export class ImError extends Error {
  constructor(kind, message, extra = {}) {
    super(message);
    this.name = 'ImError';
    this.kind = kind;
    Object.assign(this, extra);
  }
}
