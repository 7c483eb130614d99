// Node 20 lacks Promise.withResolvers, which js-ipfs' dependencies call.
if (!Promise.withResolvers) Promise.withResolvers = function () {
  let resolve, reject; const promise = new Promise((a, b) => { resolve = a; reject = b });
  return { promise, resolve, reject } }
