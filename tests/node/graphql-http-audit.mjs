// Runs every server audit of graphql-http (the GraphQL-over-HTTP spec's own suite) against
// the URL given, prints each that is not "ok", and a closing count line. Exit 1 if any MUST
// audit fails; SHOULD/MAY results that are not ok are printed as warnings.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node graphql-http-audit.mjs http://host:port/graphql');
  process.exit(2);
}
const results = await auditServer({ url });
let failedMust = 0;
for (const result of results) {
  if (result.status === 'ok') continue;
  const must = result.name.startsWith('MUST');
  if (must) failedMust += 1;
  console.log(`${must ? 'FAIL' : 'warn'} ${result.id} ${result.name}: ${result.reason}`);
}
const ok = results.filter((r) => r.status === 'ok').length;
console.log(`audits: ${ok} ok, ${results.length - ok} not ok, ${failedMust} MUST failed`);
process.exit(failedMust === 0 ? 0 : 1);
