"""One module per verb of `python -m pipeline VERB`: `HELP`, `add_arguments(parser)`, `run(args)`.

A verb parses explicit paths and values (every config-shaped value is a required argument: the
schema holds the defaults, the rule passes them), calls the package and nothing else. One module per
verb keeps each rule's code digest (`pipeline.codedigest`) to exactly the code that rule runs.
"""
