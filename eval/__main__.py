from robocds.eval.evaluate import main

main()
