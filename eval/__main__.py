from robocds.eval.evaluate import cli

cli()
