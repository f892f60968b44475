#define DOCTEST_CONFIG_IMPLEMENT
#include "support/doctest_main.hpp"

int main(int argc, char** argv) { return corokv::test::run_tests(argc, argv); }
