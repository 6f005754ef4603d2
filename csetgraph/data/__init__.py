"""csetgraph.data"""
