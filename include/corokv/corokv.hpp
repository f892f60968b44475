#pragma once
// Umbrella header: everything corokv offers that needs no optional
// dependency: the embedded store, the node (cluster) store and their parts.

#include <corokv/cluster.hpp>
#include <corokv/embedded.hpp>
#include <corokv/error.hpp>
#include <corokv/meta/service.hpp>
#include <corokv/node.hpp>
#include <corokv/types.hpp>
