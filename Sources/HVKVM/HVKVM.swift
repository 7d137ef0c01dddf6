import HVCore
