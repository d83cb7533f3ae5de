"""ARM template expansion the way Azure Resource Manager deploys a template, offline and pure.

- `expressions`: the expression language's parser (`[if(equals(parameters('sku'), 'Premium'), ...)]`).
- `values`: what an expression can evaluate to beyond JSON: `Unresolved` (cannot be known offline, with the
  values it can take when they are few) and `Placeholder` (text that names a deployment-time value).
- `functions`: the template functions, each over evaluated arguments.
- `evaluator`: parameters, variables (and their `copy`), copy indexes, lambdas; lazy `if`, `and`, `or`, `coalesce`.
- `deployments`: resources as ARM deploys them: `copy` loops, `condition`, `existing`, languageVersion 2.0
  symbolic names, nested deployments (`scope: inner` and `outer`) to any depth.

Nothing here reads a file, the clock or the network: where a value truly cannot be known offline
(`reference()`, `list*()`, `utcNow()`, `newGuid()`, a parameter with no value) the answer is `Unresolved`,
never a guess.
"""
