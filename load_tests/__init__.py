"""load_tests"""
