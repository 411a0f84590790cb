"""robocds.pipeline: a whole experiment (generate -> train -> evaluate -> analyse -> report), above every package.

It launches the console commands of the other packages and reads their outputs back through the typed
readers those packages export; nothing below it imports it.
"""
