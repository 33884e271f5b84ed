// The example operations in operations/*.graphql, as documents a server accepts: one
// operation with exactly the fragments it uses (unused fragments are a validation error).
import { readdirSync, readFileSync } from "node:fs";
import { Kind, parse, print, visit } from "graphql";

const folder = new URL("./operations/", import.meta.url);

function definitions() {
  return readdirSync(folder)
    .filter((name) => name.endsWith(".graphql"))
    .flatMap((name) => parse(readFileSync(new URL(name, folder), "utf8")).definitions);
}

/** The source of operation `name` followed by every fragment it needs. */
export function operation(name) {
  const all = definitions();
  const fragments = new Map(
    all.filter((d) => d.kind === Kind.FRAGMENT_DEFINITION).map((d) => [d.name.value, d]),
  );
  const root = all.find((d) => d.kind === Kind.OPERATION_DEFINITION && d.name?.value === name);
  if (!root) throw new Error(`no operation named ${name} in operations/`);
  const needed = new Map();
  const pending = [root];
  while (pending.length > 0) {
    visit(pending.pop(), {
      FragmentSpread(node) {
        const fragment = fragments.get(node.name.value);
        if (!needed.has(node.name.value)) {
          needed.set(node.name.value, fragment);
          pending.push(fragment);
        }
      },
    });
  }
  return [root, ...needed.values()].map(print).join("\n\n");
}
