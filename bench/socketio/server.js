// Socket.IO 4 server of the im benchmark, written as its documentation
// suggests: each socket joins the room named by its `room` query parameter
// with `socket.join`, the event `msg(room, body[, ack])` is relayed to the
// other sockets of the room with `socket.to(room).emit("msg", body)`, and the
// sender's emit callback is called once relayed (the acked scenarios).
// Nothing is stored and nobody is authenticated, as for the raw baseline.
//
// Usage: node server.js PORT   (listens on 127.0.0.1 only)
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 9002);
const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ["websocket"], // the load generator speaks WebSocket only
  perMessageDeflate: false, // the default, stated: no compression anywhere
  serveClient: false,
});

io.on("connection", (socket) => {
  const room = String(socket.handshake.query.room || "default");
  socket.join(room);
  socket.on("msg", (to, body, ack) => {
    socket.to(to).emit("msg", body);
    if (typeof ack === "function") {
      ack();
    }
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`socket.io ${require("socket.io/package.json").version} listening on 127.0.0.1:${port}`);
});
