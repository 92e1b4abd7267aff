// Entry module of the gatehouse Cloudflare Worker.
//
// scripts/build-worker.sh writes build/ with `wasm-bindgen --target web`: the
// WebAssembly module and its JavaScript bindings. Wrangler bundles this file and
// imports the .wasm file as a compiled WebAssembly.Module, which initSync instantiates
// once per isolate. That also runs the Rust start function.
import wasmModule from "./build/gatehouse_edge_bg.wasm";
import { initSync, fetch } from "./build/gatehouse_edge.js";

initSync({ module: wasmModule });

export default { fetch };

// The Durable Object class of `durable_object` counter stores, bound in wrangler.toml.
export { GatehouseCounter } from "./build/gatehouse_edge.js";
