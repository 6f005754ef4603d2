"""csetgraph.nn"""
