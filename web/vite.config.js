// Vite builds web/dist/, which is committed and embedded into build/tempo (docs/server.md).
// The build must be byte-identical on every machine (tests/test_web.c rebuilds it and compares):
// no source maps (they hold paths), asset names from content hashes only, and one JS and one CSS
// file so the embedded table stays small.
import { defineConfig } from 'vite';

export default defineConfig({
  base: './', // relative URLs: the page works behind a proxy that mounts the server under a path
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
    rolldownOptions: {
      output: { codeSplitting: false },
    },
  },
});
