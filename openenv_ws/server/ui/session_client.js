// One session over WS /v1/sessions in JSON text frames (the server answers in the encoding it receives).
//
// open -> opened; then numbered requests (reset, step, state, close), one at a time, each answered by
// zero or more events and one final reply. A frame with seq 0 is the server ending the session.

import { openSocket, whySocketFailed } from "./api.js";

export class SessionEnded extends Error {}

export class SessionClient {
  constructor({ onFrame = () => {}, onEnded = () => {} } = {}) {
    this.onFrame = onFrame; // every frame, both ways: (direction "c2s"|"s2c", frame)
    this.onEnded = onEnded; // (reason)
    this.seq = 0;
    this.pending = null; // {seq, resolve, reject, onEvent}
    this.opened = null;
    this.ended = false;
  }

  // Open a session of `env` with constructor `options`; resolves with the `opened` frame.
  open(env, options) {
    return new Promise((resolve, reject) => {
      const socket = openSocket("/v1/sessions");
      this.socket = socket;
      let answered = false;
      socket.onopen = () => this.send({ t: "open", env, options });
      socket.onmessage = (event) => {
        const frame = JSON.parse(event.data);
        this.onFrame("s2c", frame);
        if (!answered) {
          answered = true;
          if (frame.t === "opened") {
            this.opened = frame;
            resolve(frame);
          } else {
            reject(new SessionEnded(frame.message || frame.reason || `unexpected ${frame.t}`));
          }
          return;
        }
        this.receive(frame);
      };
      socket.onclose = async (event) => {
        const reason = event.reason || `connection closed (${event.code})`;
        if (!answered) {
          answered = true;
          reject(event.code === 1006 ? await whySocketFailed() : new SessionEnded(reason));
        }
        this.end(reason);
      };
    });
  }

  send(frame) {
    this.onFrame("c2s", frame);
    this.socket.send(JSON.stringify(frame));
  }

  receive(frame) {
    const pending = this.pending;
    if (frame.seq === 0 || !pending) {
      if (frame.t === "closed" || (frame.t === "error" && frame.fatal)) this.end(frame.reason || frame.message);
      return;
    }
    if (frame.seq !== pending.seq) return; // a repeat of an older answer
    if (frame.t === "event") {
      pending.onEvent(frame);
      return;
    }
    this.pending = null;
    if (frame.t === "closed" || (frame.t === "error" && frame.fatal)) this.end(frame.reason || frame.message);
    pending.resolve(frame);
  }

  // Send a request ({t: "reset"|"step"|"state"|"close", ...}); resolves with its final reply.
  request(frame, onEvent = () => {}) {
    if (this.ended) return Promise.reject(new SessionEnded("the session has ended"));
    if (this.pending) return Promise.reject(new Error("a request is already running"));
    return new Promise((resolve, reject) => {
      this.seq += 1;
      this.pending = { seq: this.seq, resolve, reject, onEvent };
      this.send({ ...frame, seq: this.seq });
    });
  }

  async close() {
    if (this.ended) return;
    try {
      await this.request({ t: "close" });
    } finally {
      this.socket.close();
    }
  }

  end(reason) {
    if (this.ended) return;
    this.ended = true;
    if (this.pending) {
      this.pending.reject(new SessionEnded(reason));
      this.pending = null;
    }
    this.onEnded(reason);
  }
}
