"""Generated media that the other roles draw on (no command line): ``scenes`` (the demo's synthetic
scenes, their masks and clips), ``faces`` (scikit-image's face photos placed and moved in frames).
"""
