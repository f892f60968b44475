#pragma once
// Umbrella header: everything corokv offers that needs no optional dependency.

#include <corokv/error.hpp>
#include <corokv/types.hpp>
#include <corokv/meta/service.hpp>
